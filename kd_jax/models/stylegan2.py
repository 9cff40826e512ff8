"""StyleGAN2 generator and residual discriminator (Karras et al. 2020, "Analyzing and Improving the
Image Quality of StyleGAN"), small enough for 28–32 px and sized by one `width`.

Kept from the paper: mapping network z → w (with lr multiplier), learned constant input, weight
modulation + demodulation, per-layer noise with learned strength, skip-connected toRGB outputs
summed across resolutions, residual discriminator with minibatch-stddev, equalised learning rate
(optional).
Left out: style mixing, truncation, path-length regularisation, blur filters (upsampling is nearest
or bilinear resize before the 3×3 conv).

Per-layer noise is drawn with `self.make_rng('noise')`, which Flax derives from the key passed as
`rngs={'noise': key}` AND the module path. Noise maps are [B, H, W, 1], independent of width, so a
teacher and a student of the same family called with the same key get identical noise at every
layer; without a 'noise' rng the noise is zero (deterministic evaluation).

Generator feature paths: `mapping`, `const`, `block0`.. (with `conv0`/`conv1` inside), `to_rgb0`..
Discriminator: `from_rgb`, `block0`.., `mbstd`, `conv`, `fc` (embedding [B, C]), `head`.
"""
from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from kd_jax import errors
from kd_jax.models import layers
from kd_jax.types import Array

NOISE_MODES = ('auto', 'random', 'none')
_SQRT2 = math.sqrt(2.0)


def _lrelu(x: Array) -> Array:
  # The sqrt(2) gain keeps activations' second moment ~1 through LeakyReLU(0.2), as in the paper.
  return nn.leaky_relu(x, 0.2) * _SQRT2


def _weight(module: nn.Module, shape: tuple[int, ...], fan_in: int, equalized: bool,
            lr_multiplier: float = 1.0) -> Array:
  """A weight with equalised learning rate (Karras et al. 2018) or plain He-style init.

  Equalised: stored ~N(0, 1/lr_mul²) and scaled by lr_mul/sqrt(fan_in) at every call, so Adam's
  per-parameter step size acts equally on all layers. Plain: stored ~N(0, 1/fan_in), used as is.
  """
  if equalized:
    w = module.param('kernel', nn.initializers.normal(1.0 / lr_multiplier), shape)
    return w * (lr_multiplier / math.sqrt(fan_in))
  return module.param('kernel', nn.initializers.normal(1.0 / math.sqrt(fan_in)), shape)


def _bias(module: nn.Module, features: int, init: float, equalized: bool,
          lr_multiplier: float = 1.0) -> Array:
  if equalized:
    b = module.param('bias', nn.initializers.constant(init / lr_multiplier), (features,))
    return b * lr_multiplier
  return module.param('bias', nn.initializers.constant(init), (features,))


def _conv(x: Array, w: Array) -> Array:
  return jax.lax.conv_general_dilated(x, w.astype(x.dtype), (1, 1), 'SAME',
                                      dimension_numbers=('NHWC', 'HWIO', 'NHWC'))


class EqualDense(nn.Module):
  """Dense layer with optional equalised learning rate and lr multiplier."""
  features: int
  bias_init: float = 0.0
  lr_multiplier: float = 1.0
  equalized: bool = True
  dtype: layers.Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    w = _weight(self, (x.shape[-1], self.features), x.shape[-1], self.equalized, self.lr_multiplier)
    b = _bias(self, self.features, self.bias_init, self.equalized, self.lr_multiplier)
    return x.astype(self.dtype) @ w.astype(self.dtype) + b.astype(self.dtype)


class EqualConv(nn.Module):
  """k×k 'SAME' conv with optional equalised learning rate."""
  features: int
  kernel_size: int = 3
  use_bias: bool = True
  equalized: bool = True
  dtype: layers.Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    k, cin = self.kernel_size, x.shape[-1]
    w = _weight(self, (k, k, cin, self.features), k * k * cin, self.equalized)
    y = _conv(x.astype(self.dtype), w)
    if self.use_bias:
      y = y + _bias(self, self.features, 0.0, self.equalized).astype(self.dtype)
    return y


class ModulatedConv(nn.Module):
  """Style-modulated (and optionally demodulated) k×k conv, Eq. 1–3 of Karras et al. 2020.

  With style s = affine(w) ∈ R^{Cin} and weight W[k, k, Cin, Cout]:
    W'  = W · s_in                         (modulation)
    W'' = W' / sqrt(Σ_{k,k,in} W'² + 1e-8)  (demodulation, per example and output channel)
  Computed as conv(x · s, W) · d with d = rsqrt(s² @ Σ_{k,k} W² + 1e-8): the same result as the
  per-example weights of the paper but with one shared-weight conv (the paper's non-fused path).
  """
  features: int
  kernel_size: int = 3
  demodulate: bool = True
  equalized: bool = True
  dtype: layers.Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, w: Array) -> Array:
    k, cin = self.kernel_size, x.shape[-1]
    # Bias 1 so that styles start as the identity modulation.
    style = EqualDense(cin, bias_init=1.0, equalized=self.equalized, dtype=jnp.float32,
                       name='affine')(w)
    weight = _weight(self, (k, k, cin, self.features), k * k * cin, self.equalized)
    y = _conv((x * style[:, None, None, :].astype(x.dtype)).astype(self.dtype), weight)
    if self.demodulate:
      d = jax.lax.rsqrt(jnp.square(style) @ jnp.sum(jnp.square(weight), axis=(0, 1)) + 1e-8)
      y = y * d[:, None, None, :].astype(y.dtype)
    return y


class StyleConv(nn.Module):
  """(Optional ×2 upsample) → modulated 3×3 conv → + noise · strength → + bias → LeakyReLU."""
  features: int
  upsample: bool = False
  upsample_method: str = 'nearest'
  equalized: bool = True
  dtype: layers.Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, w: Array, noise_mode: str) -> Array:
    if self.upsample:
      x = layers.upsample(x, self.upsample_method)
    y = ModulatedConv(self.features, 3, equalized=self.equalized, dtype=self.dtype,
                      name='conv')(x, w)
    strength = self.param('noise_strength', nn.initializers.zeros, ())
    if noise_mode == 'random' or (noise_mode == 'auto' and self.has_rng('noise')):
      if not self.has_rng('noise'):
        raise errors.ConfigError("noise_mode='random' needs a noise key: call the generator with "
                                 "rngs={'noise': key}, or set noise_mode to 'auto' or 'none'.")
      b, h, wd, _ = y.shape
      noise = jax.random.normal(self.make_rng('noise'), (b, h, wd, 1), jnp.float32)
      y = y + (noise * strength).astype(y.dtype)
    y = y + _bias(self, self.features, 0.0, self.equalized).astype(y.dtype)
    return _lrelu(y)


class ToRGB(nn.Module):
  """Modulated 1×1 conv (no demodulation) + bias: this resolution's contribution to the image."""
  channels: int
  equalized: bool = True
  dtype: layers.Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, w: Array) -> Array:
    y = ModulatedConv(self.channels, 1, demodulate=False, equalized=self.equalized,
                      dtype=self.dtype, name='conv')(x, w)
    return y + _bias(self, self.channels, 0.0, self.equalized).astype(y.dtype)


class MappingNetwork(nn.Module):
  """z (+ class) → w: normalise z (and the class embedding) to unit second moment, then MLP."""
  w_dim: int
  num_layers: int
  num_classes: int = 0
  lr_multiplier: float = 0.01
  equalized: bool = True
  dtype: layers.Dtype = jnp.float32

  @nn.compact
  def __call__(self, z: Array, labels: Array | None = None) -> Array:
    def normalize(v: Array) -> Array:
      return v * jax.lax.rsqrt(jnp.mean(jnp.square(v), axis=-1, keepdims=True) + 1e-8)
    h = normalize(z.astype(jnp.float32))
    if self.num_classes:
      emb = layers.class_embedding(labels, z.shape[0], self.num_classes, self.w_dim, jnp.float32)
      # Normalising a zero embedding (labels=None) keeps it zero.
      h = jnp.concatenate([h, normalize(emb)], axis=-1)
    for i in range(self.num_layers):
      h = _lrelu(EqualDense(self.w_dim, lr_multiplier=self.lr_multiplier,
                            equalized=self.equalized, dtype=self.dtype, name=f'dense{i}')(h))
    return h.astype(jnp.float32)


class ConstInput(nn.Module):
  """The learned constant [size, size, C] the synthesis starts from, tiled over the batch."""
  size: int
  features: int

  @nn.compact
  def __call__(self, batch: int) -> Array:
    const = self.param('const', nn.initializers.normal(1.0),
                       (self.size, self.size, self.features))
    return jnp.broadcast_to(const, (batch, *const.shape))


class SynthesisBlock(nn.Module):
  """One resolution: (upsample +) modulated conv0, then modulated conv1; returns the features."""
  features: int
  upsample: bool
  upsample_method: str = 'nearest'
  equalized: bool = True
  dtype: layers.Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, w: Array, noise_mode: str) -> Array:
    if self.upsample:
      x = StyleConv(self.features, True, self.upsample_method, self.equalized, self.dtype,
                    name='conv0')(x, w, noise_mode)
    return StyleConv(self.features, False, self.upsample_method, self.equalized, self.dtype,
                     name='conv1')(x, w, noise_mode)


def level_channels(width: int, steps: int) -> list[int]:
  """Channels per resolution, start → output: width·2**(steps-l), capped at 8·width."""
  return [width * 2**min(steps - l, 3) for l in range(steps + 1)]


def _check_common(m: nn.Module) -> None:
  layers.check_positive(m.width, f'{type(m).__name__}.width')
  if not isinstance(m.num_classes, int) or m.num_classes < 0:
    raise errors.ConfigError(f'{type(m).__name__}.num_classes={m.num_classes!r} must be 0 '
                             '(unconditional) or the number of classes.')


class StyleGAN2Generator(nn.Module):
  """z [B, latent_dim] (+ labels [B]) → images [B, resolution, resolution, channels] in [-1, 1].

  Synthesis starts from a learned 7×7 (28 px) or 4×4 (32 px) constant; `width` is the channel
  count at the output resolution, doubling per lower resolution (cap 8·width). The image is the
  sum of every resolution's toRGB output, upsampled, through tanh. `noise_mode`: 'auto' (noise
  iff a 'noise' rng is given), 'random' (require one), 'none' (zeros); the call argument
  overrides the attribute.
  """
  latent_dim: int = 128
  w_dim: int = 256
  mapping_layers: int = 4
  width: int = 32
  resolution: int = 32
  channels: int = 3
  num_classes: int = 0
  upsample: str = 'nearest'
  noise_mode: str = 'auto'
  equalized_lr: bool = True
  mapping_lr_multiplier: float = 0.01
  dtype: layers.Dtype = jnp.float32

  def __post_init__(self) -> None:
    super().__post_init__()
    _check_common(self)
    for field in ('latent_dim', 'w_dim', 'mapping_layers', 'channels'):
      layers.check_positive(getattr(self, field), f'{type(self).__name__}.{field}')
    layers.pyramid(self.resolution, type(self).__name__)
    layers.check_choice(self.upsample, layers.UPSAMPLE_METHODS, f'{type(self).__name__}.upsample')
    layers.check_choice(self.noise_mode, NOISE_MODES, f'{type(self).__name__}.noise_mode')

  @nn.compact
  def __call__(self, z: Array, labels: Array | None = None, train: bool = False,
               noise_mode: str | None = None) -> Array:
    del train  # No BatchNorm or dropout: train and eval compute the same function.
    noise_mode = self.noise_mode if noise_mode is None else noise_mode
    layers.check_choice(noise_mode, NOISE_MODES, 'noise_mode')
    layers.check_latent(z, self.latent_dim, type(self).__name__)
    start, steps = layers.pyramid(self.resolution, type(self).__name__)
    chans = level_channels(self.width, steps)
    eq = self.equalized_lr
    w = MappingNetwork(self.w_dim, self.mapping_layers, self.num_classes,
                       self.mapping_lr_multiplier, eq, self.dtype, name='mapping')(z, labels)
    x = ConstInput(start, chans[0], name='const')(z.shape[0]).astype(self.dtype)
    rgb = None
    for i, c in enumerate(chans):
      x = SynthesisBlock(c, i > 0, self.upsample, eq, self.dtype, name=f'block{i}')(
          x, w, noise_mode)
      y = ToRGB(self.channels, eq, self.dtype, name=f'to_rgb{i}')(x, w).astype(jnp.float32)
      rgb = y if rgb is None else layers.upsample(rgb, self.upsample) + y
    return jnp.tanh(rgb)


class DiscriminatorBlock(nn.Module):
  """Residual block: 3×3 conv → downsample → 3×3 conv, plus a downsampled 1×1 skip; sum / √2."""
  features: int
  equalized: bool = True
  dtype: layers.Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    y = _lrelu(EqualConv(x.shape[-1], 3, equalized=self.equalized, dtype=self.dtype,
                         name='conv0')(x))
    y = _lrelu(EqualConv(self.features, 3, equalized=self.equalized, dtype=self.dtype,
                         name='conv1')(layers.downsample(y)))
    skip = EqualConv(self.features, 1, use_bias=False, equalized=self.equalized,
                     dtype=self.dtype, name='skip')(layers.downsample(x))
    return (y + skip) / _SQRT2


class MinibatchStd(nn.Module):
  """Appends the mean (over features) std of each group of `group_size` examples as a channel.

  Lets the discriminator see sample diversity (Karras et al. 2018). Groups are strided over the
  batch; the size falls back to the largest divisor of the batch size ≤ group_size.
  """
  group_size: int = 4

  @nn.compact
  def __call__(self, x: Array) -> Array:
    b, h, w, c = x.shape
    g = max(d for d in range(1, min(self.group_size, b) + 1) if b % d == 0)
    y = x.astype(jnp.float32).reshape(g, b // g, h, w, c)
    std = jnp.sqrt(jnp.var(y, axis=0) + 1e-8)            # [B/g, H, W, C]
    stat = jnp.mean(std, axis=(1, 2, 3))                   # [B/g]
    stat = jnp.tile(stat, g)[:, None, None, None]          # row k·B/g + j is in group j
    return jnp.concatenate([x, jnp.broadcast_to(stat, (b, h, w, 1)).astype(x.dtype)], axis=-1)


class StyleGAN2Discriminator(nn.Module):
  """images [B, H, W, C] (+ labels [B]) → logits [B]: residual blocks down to 7×7/4×4, minibatch
  stddev, conv, dense `fc`, dense `head`; projection conditioning (Miyato & Koyama 2018) on `fc`.

  `width` is the channel count at the input resolution, doubling per ×2 downsampling (cap 8·width).
  No normalisation layers, so the R1 penalty is per example.
  """
  width: int = 32
  num_classes: int = 0
  mbstd_group_size: int = 4
  equalized_lr: bool = True
  dtype: layers.Dtype = jnp.float32

  def __post_init__(self) -> None:
    super().__post_init__()
    _check_common(self)
    layers.check_positive(self.mbstd_group_size, f'{type(self).__name__}.mbstd_group_size')

  @nn.compact
  def __call__(self, x: Array, labels: Array | None = None, train: bool = False) -> Array:
    del train
    _, steps = layers.pyramid(x.shape[1], 'discriminator input')
    chans = level_channels(self.width, steps)[::-1]  # input resolution → start
    eq = self.equalized_lr
    x = _lrelu(EqualConv(chans[0], 1, equalized=eq, dtype=self.dtype, name='from_rgb')(x))
    for i in range(steps):
      x = DiscriminatorBlock(chans[i + 1], eq, self.dtype, name=f'block{i}')(x)
    x = MinibatchStd(self.mbstd_group_size, name='mbstd')(x)
    x = _lrelu(EqualConv(chans[-1], 3, equalized=eq, dtype=self.dtype, name='conv')(x))
    h = _lrelu(EqualDense(chans[-1], equalized=eq, dtype=self.dtype,
                          name='fc')(x.reshape(x.shape[0], -1)))
    logits = EqualDense(1, equalized=eq, dtype=self.dtype, name='head')(h)[:, 0]
    if self.num_classes:
      emb = layers.class_embedding(labels, x.shape[0], self.num_classes, h.shape[-1], self.dtype)
      logits = logits + jnp.sum(emb * h, axis=-1)
    return logits.astype(jnp.float32)
