"""NVIDIA's StyleGAN2-ADA generator and discriminator (Karras et al. 2020, "Training Generative
Adversarial Networks with Limited Data"; NVlabs/stylegan2-ada-pytorch `training/networks.py`), exactly
the official architecture, so that an official state dict loads and gives the official outputs.

Parameters keep the official names and layouts (conv weights OIHW, linear weights [out, in], the
constant input [C, H, W]); the module tree mirrors the torch one (`synthesis/b32/conv0/affine`), so a
state dict maps one to one onto the variables (`kd_jax.convert.stylegan2_ada`). Activations are NHWC
like the rest of kd_jax. torch buffers (`resample_filter`, `noise_const`, `w_avg`) live in the
`buffers` collection; they are never trained.

Stored vs effective weights, applied at every call as the official code does: equalised learning
rate (weight × lr_multiplier/√fan_in, bias × lr_multiplier; lr_multiplier 0.01 in the mapping
network), activation gains (lrelu(0.2)·√2), weight modulation/demodulation.

Differences, stated: `num_fp16_res` is ignored (everything is float32; fp16 is CUDA-only in the
official code and its outputs differ only by fp16 rounding); `w_avg` is not updated by the forward
(the official code does so only in train mode); conv2d_gradfix and the CUDA kernels are speed-ups
with the same math.
"""
from __future__ import annotations

import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from kd_jax.types import Array

BUFFERS = 'buffers'
ARCHITECTURES = ('orig', 'skip', 'resnet')
NOISE_MODES = ('const', 'random', 'none')
# bias_act's activation table: (function, default gain). The gain keeps the second moment ~1.
_ACTIVATIONS = {
    'linear': (lambda x: x, 1.0),
    'relu': (nn.relu, math.sqrt(2.0)),
    'lrelu': (lambda x: nn.leaky_relu(x, 0.2), math.sqrt(2.0)),
}
_DEFAULT_FILTER = (1, 3, 3, 1)


# ---------------------------------------------------------------------------------------------
# Ops: bias_act, upfirdn2d, conv2d_resample, modulated_conv2d (torch_utils/ops), in NHWC.


def setup_filter(taps: Sequence[float] = _DEFAULT_FILTER) -> np.ndarray:
  """upfirdn2d.setup_filter: the outer product of 1-D taps (< 8 taps), normalised to sum 1."""
  f = np.asarray(taps, np.float32)
  if f.ndim == 1:
    f = np.outer(f, f)
  return (f / f.sum()).astype(np.float32)


def bias_act(x: Array, b: Array | None, act: str = 'linear', gain: float | None = None,
             clamp: float | None = None) -> Array:
  """bias_act: (x + b) → activation → × gain (default: the activation's) → clamp to ±clamp."""
  fn, def_gain = _ACTIVATIONS[act]
  if b is not None:
    x = x + b
  x = fn(x)
  gain = def_gain if gain is None else gain
  if gain != 1:
    x = x * gain
  if clamp is not None:
    x = jnp.clip(x, -clamp, clamp)
  return x


def upfirdn2d(x: Array, f: Array, up: int = 1, down: int = 1,
              padding: tuple[int, int, int, int] = (0, 0, 0, 0), gain: float = 1.0,
              flip_filter: bool = False) -> Array:
  """upfirdn2d on NHWC: insert up−1 zeros after each pixel, pad (x0, x1, y0, y1) (negative crops),
  convolve each channel with the FIR `f` (a true convolution unless flip_filter), keep every
  down-th pixel. The filter is scaled by gain^(f.ndim/2), as in the official code."""
  px0, px1, py0, py1 = padding
  # The zero insertion is interior padding plus up−1 trailing zeros, so one lax.pad does both.
  x = lax.pad(x, jnp.zeros((), x.dtype),
              [(0, 0, 0), (py0, py1 + up - 1, up - 1), (px0, px1 + up - 1, up - 1), (0, 0, 0)])
  f = jnp.asarray(f, x.dtype)
  if f.ndim == 1:
    f = jnp.outer(f, f) * gain
  else:
    f = f * gain
  if not flip_filter:  # torch's conv2d correlates; flipping makes it the convolution upfirdn2d means
    f = f[::-1, ::-1]
  # Every channel gets the same filter: fold channels into the batch and run one single-channel
  # conv. The same math as a depthwise conv (feature_group_count=C), but XLA:CPU's grouped conv and
  # its gradients are slow: this made a StyleGAN2 train step 2.5× faster on CPU.
  n, h, w, c = x.shape
  y = jnp.transpose(x, (0, 3, 1, 2)).reshape(n * c, h, w, 1)
  y = lax.conv_general_dilated(y, f[:, :, None, None], (down, down), 'VALID',
                               dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  return jnp.transpose(y.reshape(n, c, y.shape[1], y.shape[2]), (0, 2, 3, 1))


def _filter_size(f: Array) -> tuple[int, int]:
  return (f.shape[-1], f.shape[0])


def upsample2d(x: Array, f: Array, up: int = 2) -> Array:
  """upfirdn2d.upsample2d: output exactly up× the input, filter gain up² keeps the DC level."""
  fw, fh = _filter_size(f)
  pad = ((fw + up - 1) // 2, (fw - up) // 2, (fh + up - 1) // 2, (fh - up) // 2)
  return upfirdn2d(x, f, up=up, padding=pad, gain=up * up)


def downsample2d(x: Array, f: Array, down: int = 2) -> Array:
  """upfirdn2d.downsample2d: output exactly 1/down of the input."""
  fw, fh = _filter_size(f)
  pad = ((fw - down + 1) // 2, (fw - down) // 2, (fh - down + 1) // 2, (fh - down) // 2)
  return upfirdn2d(x, f, down=down, padding=pad)


def _conv(x: Array, w: Array, stride: int = 1, padding: Sequence[tuple[int, int]] = ((0, 0), (0, 0)),
          lhs_dilation: int = 1) -> Array:
  return lax.conv_general_dilated(x, w, (stride, stride), tuple(padding),
                                  lhs_dilation=(lhs_dilation, lhs_dilation),
                                  dimension_numbers=('NHWC', 'OIHW', 'NHWC'),
                                  precision=lax.Precision.HIGHEST)


def conv2d_resample(x: Array, w: Array, f: Array | None = None, up: int = 1, down: int = 1,
                    padding: int = 0, flip_weight: bool = True) -> Array:
  """conv2d_resample: conv of NHWC `x` with OIHW `w`, with FIR up/downsampling.

  flip_weight=True is a correlation (torch conv2d), False a true convolution (what the official
  code uses for up=2, where it runs a transposed conv). Padding is relative to the upsampled image
  and applied once. The official code picks among equivalent orders of operations for speed; here
  the order is the one with the same math for each case it supports (up or down, not both).
  """
  kh, kw = w.shape[2], w.shape[3]
  if not flip_weight:
    w = w[:, :, ::-1, ::-1]
  px0 = px1 = py0 = py1 = padding
  if up > 1 and down > 1:
    raise NotImplementedError('conv2d_resample with both up and down: unused by StyleGAN2-ADA')
  if up > 1:
    fw, fh = _filter_size(f)
    px0 += (fw + up - 1) // 2
    px1 += (fw - up) // 2
    py0 += (fh + up - 1) // 2
    py1 += (fh - up) // 2
    if kh == 1 and kw == 1:
      return upfirdn2d(_conv(x, w), f, up=up, padding=(px0, px1, py0, py1), gain=up * up)
    # The official transposed conv = zero-insert, full padding (k−1), correlate; the FIR pass then
    # takes what is left of the padding (negative = crop).
    x = _conv(x, w, padding=((kh - 1, kh - 1), (kw - 1, kw - 1)), lhs_dilation=up)
    return upfirdn2d(x, f, padding=(px0 - (kw - 1), px1 - (kw - up), py0 - (kh - 1), py1 - (kh - up)),
                     gain=up * up)
  if down > 1:
    fw, fh = _filter_size(f)
    px0 += (fw - down + 1) // 2
    px1 += (fw - down) // 2
    py0 += (fh - down + 1) // 2
    py1 += (fh - down) // 2
    if kh == 1 and kw == 1:
      return _conv(upfirdn2d(x, f, down=down, padding=(px0, px1, py0, py1)), w)
    return _conv(upfirdn2d(x, f, padding=(px0, px1, py0, py1)), w, stride=down)
  return _conv(x, w, padding=((py0, py1), (px0, px1)))


def modulated_conv2d(x: Array, weight: Array, styles: Array, noise: Array | None = None,
                     up: int = 1, padding: int = 0, resample_filter: Array | None = None,
                     demodulate: bool = True, flip_weight: bool = True,
                     fused_modconv: bool = True) -> Array:
  """Modulated conv (StyleGAN2 eq. 1–3): W'[n,o,i] = W[o,i]·s[n,i], demodulated by
  1/√(Σ_{i,kh,kw} W'² + 1e-8) per sample and output channel; then `noise` is added.

  fused: one conv per sample with its own weights (vmap → a grouped conv); not fused: scale the
  activations by s before and by the demodulation after a shared-weight conv. Same math.
  """
  n = x.shape[0]
  conv = lambda x, w: conv2d_resample(x, w, resample_filter, up=up, padding=padding,  # noqa: E731
                                      flip_weight=flip_weight)
  if fused_modconv:
    w = weight[None] * styles.reshape(n, 1, -1, 1, 1)  # [N, O, I, kh, kw]
    if demodulate:
      dcoefs = lax.rsqrt(jnp.sum(jnp.square(w), axis=(2, 3, 4)) + 1e-8)
      w = w * dcoefs.reshape(n, -1, 1, 1, 1)
    x = jax.vmap(lambda xi, wi: conv(xi[None], wi)[0])(x, w)
  else:
    x = conv(x * styles.reshape(n, 1, 1, -1), weight)
    if demodulate:
      # Σ_{i,kh,kw} (W[o,i]·s[n,i])² = Σ_i s[n,i]² · Σ_{kh,kw} W[o,i]²: the same sum without the
      # per-sample [N, O, I, kh, kw] weights (and their gradient) the fused form needs.
      dcoefs = lax.rsqrt(jnp.square(styles) @ jnp.sum(jnp.square(weight), axis=(2, 3)).T + 1e-8)
      x = x * dcoefs.reshape(n, 1, 1, -1)
  if noise is not None:
    x = x + noise
  return x


def normalize_2nd_moment(x: Array, eps: float = 1e-8) -> Array:
  """x / √(mean(x²) + eps) over the features."""
  return x * lax.rsqrt(jnp.mean(jnp.square(x), axis=1, keepdims=True) + eps)


# ---------------------------------------------------------------------------------------------
# Layers.


def _filter_buffer(module: nn.Module, taps: Sequence[float]) -> Array:
  return module.variable(BUFFERS, 'resample_filter', lambda: jnp.asarray(setup_filter(taps))).value


class FullyConnectedLayer(nn.Module):
  """Equalised-lr linear layer: y = act(x @ (W·lr/√in)ᵀ + b·lr); W stored N(0, 1/lr²)."""
  out_features: int
  use_bias: bool = True
  activation: str = 'linear'
  lr_multiplier: float = 1.0
  bias_init: float = 0.0

  @nn.compact
  def __call__(self, x: Array) -> Array:
    fan_in = x.shape[-1]
    weight = self.param('weight', lambda k, s: jax.random.normal(k, s) / self.lr_multiplier,
                        (self.out_features, fan_in))
    x = x @ (weight * (self.lr_multiplier / math.sqrt(fan_in))).T
    b = None
    if self.use_bias:
      b = self.param('bias', nn.initializers.constant(self.bias_init), (self.out_features,))
      b = b * self.lr_multiplier if self.lr_multiplier != 1 else b
    return bias_act(x, b, self.activation)


class Conv2dLayer(nn.Module):
  """Equalised-lr conv (weight × 1/√(in·k²)) with optional FIR up/down-sampling, then bias_act with
  gain act_gain·gain and clamp conv_clamp·gain."""
  out_channels: int
  kernel_size: int
  use_bias: bool = True
  activation: str = 'linear'
  up: int = 1
  down: int = 1
  resample_filter: Sequence[float] = _DEFAULT_FILTER
  conv_clamp: float | None = None

  @nn.compact
  def __call__(self, x: Array, gain: float = 1.0) -> Array:
    cin, k = x.shape[-1], self.kernel_size
    f = _filter_buffer(self, self.resample_filter)
    weight = self.param('weight', nn.initializers.normal(1.0), (self.out_channels, cin, k, k))
    b = self.param('bias', nn.initializers.zeros, (self.out_channels,)) if self.use_bias else None
    x = conv2d_resample(x, weight * (1 / math.sqrt(cin * k * k)), f, up=self.up, down=self.down,
                        padding=k // 2, flip_weight=(self.up == 1))
    clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
    return bias_act(x, b, self.activation, gain=_ACTIVATIONS[self.activation][1] * gain, clamp=clamp)


class MappingNetwork(nn.Module):
  """z (and c) → w: 2nd-moment-normalised z, concatenated with the normalised embedding of c,
  `num_layers` FC layers with lr multiplier 0.01, broadcast to `num_ws` rows, truncation toward
  the `w_avg` buffer: w_avg + ψ·(w − w_avg) on the first `truncation_cutoff` rows (all if None).
  """
  z_dim: int
  c_dim: int
  w_dim: int
  num_ws: int | None
  num_layers: int = 8
  embed_features: int | None = None
  layer_features: int | None = None
  activation: str = 'lrelu'
  lr_multiplier: float = 0.01
  w_avg_beta: float | None = 0.995

  @nn.compact
  def __call__(self, z: Array | None, c: Array | None, truncation_psi: float = 1,
               truncation_cutoff: int | None = None, update_emas: bool = False) -> Array:
    embed = (self.w_dim if self.embed_features is None else self.embed_features) if self.c_dim else 0
    hidden = self.w_dim if self.layer_features is None else self.layer_features
    has_avg = self.num_ws is not None and self.w_avg_beta is not None
    w_avg = self.variable(BUFFERS, 'w_avg', jnp.zeros, (self.w_dim,)) if has_avg else None
    parts = []
    if self.z_dim > 0:
      parts.append(normalize_2nd_moment(z.astype(jnp.float32)))
    if self.c_dim > 0:
      y = FullyConnectedLayer(embed, name='embed')(c.astype(jnp.float32))
      parts.append(normalize_2nd_moment(y))
    x = jnp.concatenate(parts, axis=1) if len(parts) > 1 else parts[0]
    for idx in range(self.num_layers):
      out = self.w_dim if idx == self.num_layers - 1 else hidden
      x = FullyConnectedLayer(out, activation=self.activation, lr_multiplier=self.lr_multiplier,
                              name=f'fc{idx}')(x)
    if update_emas and w_avg is not None and self.is_mutable_collection(BUFFERS):
      # The official training-time update (lerp toward the batch mean of w); truncation in a
      # generator trained here then pulls toward its own average w.
      w_avg.value = w_avg.value * self.w_avg_beta + jnp.mean(
          lax.stop_gradient(x), axis=0) * (1 - self.w_avg_beta)
    if self.num_ws is not None:
      x = jnp.repeat(x[:, None], self.num_ws, axis=1)
    if not (isinstance(truncation_psi, (int, float)) and truncation_psi == 1):
      if w_avg is None:
        raise ValueError('truncation needs the w_avg buffer (num_ws and w_avg_beta not None)')
      truncated = w_avg.value + truncation_psi * (x - w_avg.value)
      if self.num_ws is None or truncation_cutoff is None:
        x = truncated
      else:
        x = x.at[:, :truncation_cutoff].set(truncated[:, :truncation_cutoff])
    return x


class SynthesisLayer(nn.Module):
  """Modulated 3×3 conv (up=1 or 2) + noise (`noise_const`·`noise_strength` or fresh N(0,1) from
  the 'noise' rng) + bias + lrelu·√2 (× gain), clamped to ±conv_clamp·gain."""
  out_channels: int
  resolution: int
  kernel_size: int = 3
  up: int = 1
  use_noise: bool = True
  activation: str = 'lrelu'
  resample_filter: Sequence[float] = _DEFAULT_FILTER
  conv_clamp: float | None = None

  @nn.compact
  def __call__(self, x: Array, w: Array, noise_mode: str = 'const', fused_modconv: bool = True,
               gain: float = 1.0) -> Array:
    if noise_mode not in NOISE_MODES:
      raise ValueError(f'noise_mode={noise_mode!r}; expected one of {NOISE_MODES}')
    cin, k, res = x.shape[-1], self.kernel_size, self.resolution
    f = _filter_buffer(self, self.resample_filter)
    styles = FullyConnectedLayer(cin, bias_init=1.0, name='affine')(w)
    weight = self.param('weight', nn.initializers.normal(1.0), (self.out_channels, cin, k, k))
    noise = None
    if self.use_noise:
      const = self.variable(BUFFERS, 'noise_const',
                            lambda: jax.random.normal(self.make_rng('params'), (res, res)))
      strength = self.param('noise_strength', nn.initializers.zeros, ())
      if noise_mode == 'random':
        noise = jax.random.normal(self.make_rng('noise'), (x.shape[0], res, res, 1)) * strength
      elif noise_mode == 'const':
        noise = (const.value * strength)[None, :, :, None]
    bias = self.param('bias', nn.initializers.zeros, (self.out_channels,))
    x = modulated_conv2d(x, weight, styles, noise, up=self.up, padding=k // 2, resample_filter=f,
                         flip_weight=(self.up == 1), fused_modconv=fused_modconv)
    clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
    return bias_act(x, bias, self.activation, gain=_ACTIVATIONS[self.activation][1] * gain,
                    clamp=clamp)


class ToRGBLayer(nn.Module):
  """Modulated 1×1 conv without demodulation, style × 1/√(in·k²), bias, linear, clamp."""
  out_channels: int
  kernel_size: int = 1
  conv_clamp: float | None = None

  @nn.compact
  def __call__(self, x: Array, w: Array, fused_modconv: bool = True) -> Array:
    cin, k = x.shape[-1], self.kernel_size
    styles = FullyConnectedLayer(cin, bias_init=1.0, name='affine')(w) * (1 / math.sqrt(cin * k * k))
    weight = self.param('weight', nn.initializers.normal(1.0), (self.out_channels, cin, k, k))
    bias = self.param('bias', nn.initializers.zeros, (self.out_channels,))
    x = modulated_conv2d(x, weight, styles, demodulate=False, fused_modconv=fused_modconv)
    return bias_act(x, bias, clamp=self.conv_clamp)


class SynthesisBlock(nn.Module):
  """One resolution: [const | conv0 (up=2)] → conv1 → torgb, with the 'orig', 'skip' (image
  upsampled and summed across resolutions) or 'resnet' (1×1 up=2 skip, both paths × √0.5) layout.
  Takes num_conv + num_torgb rows of ws; the torgb row is shared with the next block's conv0."""
  in_channels: int  # 0 = the first block (learned constant input)
  out_channels: int
  resolution: int
  img_channels: int
  is_last: bool
  architecture: str = 'skip'
  resample_filter: Sequence[float] = _DEFAULT_FILTER
  conv_clamp: float | None = None
  use_noise: bool = True
  activation: str = 'lrelu'

  @property
  def num_conv(self) -> int:
    return 1 if self.in_channels == 0 else 2

  @property
  def num_torgb(self) -> int:
    return int(self.is_last or self.architecture == 'skip')

  @nn.compact
  def __call__(self, x: Array | None, img: Array | None, ws: Array, noise_mode: str = 'const',
               fused_modconv: bool = True) -> tuple[Array, Array | None]:
    f = _filter_buffer(self, self.resample_filter)
    layer = dict(resolution=self.resolution, resample_filter=self.resample_filter,
                 conv_clamp=self.conv_clamp, use_noise=self.use_noise, activation=self.activation)
    kw = dict(noise_mode=noise_mode, fused_modconv=fused_modconv)
    ws_iter = iter(ws[:, i] for i in range(ws.shape[1]))
    if self.in_channels == 0:
      const = self.param('const', nn.initializers.normal(1.0),
                         (self.out_channels, self.resolution, self.resolution))
      x = jnp.broadcast_to(jnp.transpose(const, (1, 2, 0))[None], (ws.shape[0],) + const.shape[1:]
                           + const.shape[:1])
      x = SynthesisLayer(self.out_channels, name='conv1', **layer)(x, next(ws_iter), **kw)
    elif self.architecture == 'resnet':
      y = Conv2dLayer(self.out_channels, 1, use_bias=False, up=2,
                      resample_filter=self.resample_filter, name='skip')(x, gain=math.sqrt(0.5))
      x = SynthesisLayer(self.out_channels, up=2, name='conv0', **layer)(x, next(ws_iter), **kw)
      x = SynthesisLayer(self.out_channels, name='conv1', **layer)(x, next(ws_iter), **kw,
                                                                   gain=math.sqrt(0.5))
      x = y + x
    else:
      x = SynthesisLayer(self.out_channels, up=2, name='conv0', **layer)(x, next(ws_iter), **kw)
      x = SynthesisLayer(self.out_channels, name='conv1', **layer)(x, next(ws_iter), **kw)
    if img is not None:
      img = upsample2d(img, f)
    if self.num_torgb:
      y = ToRGBLayer(self.img_channels, conv_clamp=self.conv_clamp, name='torgb')(
          x, next(ws_iter), fused_modconv=fused_modconv)
      img = y if img is None else img + y
    return x, img


def channels_dict(resolutions: Sequence[int], channel_base: int, channel_max: int) -> dict[int, int]:
  """The official channel count per resolution: min(channel_base // res, channel_max)."""
  return {res: min(channel_base // res, channel_max) for res in resolutions}


def block_resolutions(img_resolution: int) -> list[int]:
  """4, 8, …, img_resolution (a power of two ≥ 4)."""
  log2 = int(np.log2(img_resolution))
  if img_resolution < 4 or 2 ** log2 != img_resolution:
    raise ValueError(f'img_resolution={img_resolution}: expected a power of two ≥ 4')
  return [2 ** i for i in range(2, log2 + 1)]


def num_ws(img_resolution: int, architecture: str = 'skip') -> int:
  """Rows of ws the synthesis network takes: one per conv, plus the last block's torgb."""
  del architecture  # every layout has the same convs and one torgb row at the end
  return 2 * len(block_resolutions(img_resolution))


class SynthesisNetwork(nn.Module):
  """ws [N, num_ws, w_dim] → image [N, R, R, img_channels] (NHWC, unclamped, roughly [−1, 1])."""
  w_dim: int
  img_resolution: int
  img_channels: int = 3
  channel_base: int = 32768
  channel_max: int = 512
  num_fp16_res: int = 0  # ignored: float32 throughout
  architecture: str = 'skip'
  resample_filter: Sequence[float] = _DEFAULT_FILTER
  conv_clamp: float | None = None
  use_noise: bool = True
  activation: str = 'lrelu'

  @property
  def num_ws(self) -> int:
    return num_ws(self.img_resolution, self.architecture)

  @nn.compact
  def __call__(self, ws: Array, noise_mode: str = 'const', fused_modconv: bool = True,
               return_blocks: bool = False) -> Array | tuple[Array, dict[str, tuple[Array, Array]]]:
    if ws.shape[1:] != (self.num_ws, self.w_dim):
      raise ValueError(f'ws has shape {ws.shape}; expected [N, {self.num_ws}, {self.w_dim}]')
    ws = ws.astype(jnp.float32)
    resolutions = block_resolutions(self.img_resolution)
    chans = channels_dict(resolutions, self.channel_base, self.channel_max)
    x = img = None
    w_idx, blocks = 0, {}
    for res in resolutions:
      block = SynthesisBlock(chans[res // 2] if res > 4 else 0, chans[res], res, self.img_channels,
                             is_last=(res == self.img_resolution), architecture=self.architecture,
                             resample_filter=self.resample_filter, conv_clamp=self.conv_clamp,
                             use_noise=self.use_noise, activation=self.activation, name=f'b{res}')
      x, img = block(x, img, ws[:, w_idx:w_idx + block.num_conv + block.num_torgb],
                     noise_mode=noise_mode, fused_modconv=fused_modconv)
      w_idx += block.num_conv
      blocks[f'b{res}'] = (x, img)
    return (img, blocks) if return_blocks else img


class Generator(nn.Module):
  """StyleGAN2-ADA generator: `mapping` (z, c → ws) then `synthesis` (ws → NHWC image).

  `model.apply(v, z, c, truncation_psi=0.7, noise_mode='const')` → images [N, R, R, C];
  `method='mapping_fn'` → ws [N, num_ws, w_dim]; `method='synthesis_fn'` → images from ws.
  noise_mode 'random' draws from the 'noise' rng (`rngs={'noise': key}`). `c` is a float
  [N, c_dim] vector (one-hot for labels) or int labels [N]; ignored when c_dim == 0.
  """
  z_dim: int
  c_dim: int
  w_dim: int
  img_resolution: int
  img_channels: int = 3
  # mapping
  mapping_layers: int = 8
  embed_features: int | None = None
  layer_features: int | None = None
  mapping_lr_multiplier: float = 0.01
  w_avg_beta: float | None = 0.995
  # synthesis
  channel_base: int = 32768
  channel_max: int = 512
  num_fp16_res: int = 0  # ignored: float32 throughout
  architecture: str = 'skip'
  resample_filter: Sequence[float] = _DEFAULT_FILTER
  conv_clamp: float | None = None
  use_noise: bool = True
  activation: str = 'lrelu'
  fused_modconv: bool = True

  kd_jax_kind = 'generator'

  def setup(self) -> None:
    self.synthesis = SynthesisNetwork(
        self.w_dim, self.img_resolution, self.img_channels, self.channel_base, self.channel_max,
        self.num_fp16_res, self.architecture, self.resample_filter, self.conv_clamp,
        self.use_noise, self.activation)
    self.mapping = MappingNetwork(
        self.z_dim, self.c_dim, self.w_dim, num_ws(self.img_resolution, self.architecture),
        self.mapping_layers, self.embed_features, self.layer_features, self.activation,
        self.mapping_lr_multiplier, self.w_avg_beta)

  def _labels(self, c: Array | None, n: int) -> Array | None:
    if self.c_dim == 0:
      return None
    if c is None:
      raise ValueError(f'c_dim={self.c_dim}: pass c, [N, {self.c_dim}] or int labels [N]')
    c = jnp.asarray(c)
    return jax.nn.one_hot(c, self.c_dim) if c.ndim == 1 else c.reshape(n, self.c_dim)

  def mapping_fn(self, z: Array, c: Array | None = None, truncation_psi: float = 1,
                 truncation_cutoff: int | None = None, update_emas: bool = False) -> Array:
    """z [N, z_dim] (and c) → ws [N, num_ws, w_dim], truncated toward w_avg."""
    return self.mapping(z, self._labels(c, z.shape[0]), truncation_psi, truncation_cutoff,
                        update_emas)

  def synthesis_fn(self, ws: Array, noise_mode: str = 'const') -> Array:
    """ws → NHWC images."""
    return self.synthesis(ws, noise_mode=noise_mode, fused_modconv=self.fused_modconv)

  def __call__(self, z: Array, labels: Array | None = None, train: bool = False, *,
               truncation_psi: float = 1, truncation_cutoff: int | None = None,
               noise_mode: str | None = None) -> Array:
    """kd_jax's generator call `G(z, labels, train=...)`, plus the official keyword arguments;
    `labels` is the official `c` (one-hot [N, c_dim] or int [N]).

    noise_mode None: 'random' when a 'noise' rng is given (training, and the distillation trainer,
    which gives teacher and student the same key), else 'const' (the official eval-time noise).
    train=True with the buffers collection mutable also updates w_avg, as official training does.
    """
    if noise_mode is None:
      noise_mode = 'random' if self.has_rng('noise') else 'const'
    ws = self.mapping_fn(z, labels, truncation_psi, truncation_cutoff, update_emas=train)
    return self.synthesis_fn(ws, noise_mode)


# ---------------------------------------------------------------------------------------------
# Discriminator.


class DiscriminatorBlock(nn.Module):
  """One resolution of D: [fromrgb 1×1] → conv0 3×3 → conv1 3×3 down=2, with 'resnet' adding a 1×1
  down=2 skip (both × √0.5) and 'skip' taking a fromrgb of the downsampled image at every block."""
  in_channels: int  # 0 = the first block
  tmp_channels: int
  out_channels: int
  resolution: int
  architecture: str = 'resnet'
  activation: str = 'lrelu'
  resample_filter: Sequence[float] = _DEFAULT_FILTER
  conv_clamp: float | None = None

  @nn.compact
  def __call__(self, x: Array | None, img: Array | None) -> tuple[Array, Array | None]:
    f = _filter_buffer(self, self.resample_filter)
    conv = dict(activation=self.activation, conv_clamp=self.conv_clamp)
    if self.in_channels == 0 or self.architecture == 'skip':
      y = Conv2dLayer(self.tmp_channels, 1, name='fromrgb', **conv)(img.astype(jnp.float32))
      x = y if x is None else x + y
      img = downsample2d(img, f) if self.architecture == 'skip' else None
    if self.architecture == 'resnet':
      y = Conv2dLayer(self.out_channels, 1, use_bias=False, down=2,
                      resample_filter=self.resample_filter, name='skip')(x, gain=math.sqrt(0.5))
      x = Conv2dLayer(self.tmp_channels, 3, name='conv0', **conv)(x)
      x = Conv2dLayer(self.out_channels, 3, down=2, resample_filter=self.resample_filter,
                      name='conv1', **conv)(x, gain=math.sqrt(0.5))
      x = y + x
    else:
      x = Conv2dLayer(self.tmp_channels, 3, name='conv0', **conv)(x)
      x = Conv2dLayer(self.out_channels, 3, down=2, resample_filter=self.resample_filter,
                      name='conv1', **conv)(x)
    return x, img


def minibatch_std(x: Array, group_size: int | None, num_channels: int = 1) -> Array:
  """Minibatch-stddev (Karras et al. 2018), the official grouping: G = min(group_size, N) samples
  per group, sample n in group n mod N/G; per group, the mean over (C/F, H, W) of
  √(var over the group + 1e-8) is appended as F new channels. N must be a multiple of G."""
  n, h, w, c = x.shape
  g = min(group_size, n) if group_size is not None else n
  nf = num_channels
  y = x.reshape(g, n // g, h, w, nf, c // nf)
  y = y - jnp.mean(y, axis=0)
  y = jnp.sqrt(jnp.mean(jnp.square(y), axis=0) + 1e-8)  # [n/G, H, W, F, c]
  y = jnp.mean(y, axis=(1, 2, 4))  # [n/G, F]
  y = jnp.tile(y, (g, 1))  # row n = group n mod N/G
  return jnp.concatenate([x, jnp.broadcast_to(y[:, None, None, :], (n, h, w, nf))], axis=-1)


class DiscriminatorEpilogue(nn.Module):
  """4×4 head: [fromrgb] → minibatch-std → conv 3×3 → fc (on the NCHW flatten, as the official
  weights expect) → out; with a cmap, the logit is (out · cmap)/√cmap_dim."""
  in_channels: int
  cmap_dim: int
  resolution: int = 4
  architecture: str = 'resnet'
  mbstd_group_size: int | None = 4
  mbstd_num_channels: int = 1
  activation: str = 'lrelu'
  conv_clamp: float | None = None

  @nn.compact
  def __call__(self, x: Array, img: Array | None, cmap: Array | None) -> Array:
    if self.architecture == 'skip':
      x = x + Conv2dLayer(self.in_channels, 1, activation=self.activation, name='fromrgb')(
          img.astype(jnp.float32))
    if self.mbstd_num_channels > 0:
      x = minibatch_std(x, self.mbstd_group_size, self.mbstd_num_channels)
    x = Conv2dLayer(self.in_channels, 3, activation=self.activation, conv_clamp=self.conv_clamp,
                    name='conv')(x)
    x = jnp.transpose(x, (0, 3, 1, 2)).reshape(x.shape[0], -1)  # C-major, like torch's flatten
    x = FullyConnectedLayer(self.in_channels, activation=self.activation, name='fc')(x)
    x = FullyConnectedLayer(1 if self.cmap_dim == 0 else self.cmap_dim, name='out')(x)
    if self.cmap_dim > 0:
      x = jnp.sum(x * cmap, axis=1, keepdims=True) * (1 / math.sqrt(self.cmap_dim))
    return x


class Discriminator(nn.Module):
  """StyleGAN2-ADA discriminator: NHWC image [N, R, R, C] (and c) → logits [N, 1].

  Blocks b{R} … b8 (default 'resnet'), a conditioning `mapping` (c → cmap, z_dim 0, no w_avg) when
  c_dim > 0, and the epilogue b4. Minibatch-std makes the logits depend on the whole batch.
  `return_blocks=True` also returns each block's output.
  """
  c_dim: int
  img_resolution: int
  img_channels: int = 3
  architecture: str = 'resnet'
  channel_base: int = 32768
  channel_max: int = 512
  num_fp16_res: int = 0  # ignored: float32 throughout
  conv_clamp: float | None = None
  cmap_dim: int | None = None
  resample_filter: Sequence[float] = _DEFAULT_FILTER
  activation: str = 'lrelu'
  mbstd_group_size: int | None = 4
  mbstd_num_channels: int = 1
  mapping_layers: int = 8
  mapping_lr_multiplier: float = 0.01

  kd_jax_kind = 'discriminator'

  @nn.compact
  def __call__(self, img: Array, labels: Array | None = None, train: bool = False, *,
               return_blocks: bool = False) -> Array | tuple[Array, dict[str, Array]]:
    """Logits [N, 1] of NHWC images; `labels` is the official `c` (one-hot or int labels)."""
    del train
    c = labels
    log2 = int(np.log2(self.img_resolution))
    resolutions = [2 ** i for i in range(log2, 2, -1)]
    chans = channels_dict(resolutions + [4], self.channel_base, self.channel_max)
    cmap_dim = (chans[4] if self.cmap_dim is None else self.cmap_dim) if self.c_dim else 0
    x, blocks = None, {}
    for res in resolutions:
      x, img = DiscriminatorBlock(
          chans[res] if res < self.img_resolution else 0, chans[res], chans[res // 2], res,
          self.architecture, self.activation, self.resample_filter, self.conv_clamp,
          name=f'b{res}')(x, img)
      blocks[f'b{res}'] = x
    cmap = None
    if self.c_dim > 0:
      c = jnp.asarray(c)
      c = jax.nn.one_hot(c, self.c_dim) if c.ndim == 1 else c
      cmap = MappingNetwork(0, self.c_dim, cmap_dim, None, self.mapping_layers,
                            lr_multiplier=self.mapping_lr_multiplier, activation=self.activation,
                            w_avg_beta=None, name='mapping')(None, c)
    x = DiscriminatorEpilogue(chans[4], cmap_dim, 4, self.architecture, self.mbstd_group_size,
                              self.mbstd_num_channels, self.activation, self.conv_clamp,
                              name='b4')(x, img, cmap)
    blocks['b4'] = x
    return (x, blocks) if return_blocks else x
