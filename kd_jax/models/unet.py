"""A small U-Net denoiser D(x; σ) with EDM preconditioning (`kd_jax.diffusion.edm`).

The body is the DDPM/ADM shape at small scale: a 3×3 stem; per resolution level `num_blocks`
residual blocks (GroupNorm → SiLU → 3×3 conv, plus a per-channel shift from the noise-level
embedding, → GroupNorm → SiLU → 3×3 conv, skip scaled by 1/√2 as in EDM's DDPM++), 2×2 average
pooling down and nearest-×2 + 3×3 conv up (on CPU much faster than a transposed conv), skip
concatenations, optional single-head self-attention at the lowest level. The noise level enters
as c_noise = ln(σ)/4 through a sinusoidal embedding and a 2-layer MLP; classes (optional) add a
learned embedding to it.

Feature paths (for feature KD through adapters): `stem`, `enc<level>_<block>`, `mid0`,
`mid_attn` (if attention), `mid1`, `dec<level>_<block>`, `up<level>`, `out`.
"""
from __future__ import annotations

import math
from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from kd_jax import errors
from kd_jax.diffusion import edm
from kd_jax.models import layers
from kd_jax.types import Array


def _groups(channels: int) -> int:
  """GroupNorm groups: 4 channels per group, at most 32 (GroupNorm(32) at ≥ 128 channels)."""
  return max(1, min(32, channels // 4))


def noise_embedding(c_noise: Array, dim: int) -> Array:
  """[B, dim] sinusoidal embedding of c_noise (DDPM's positional embedding, max period 10⁴)."""
  half = dim // 2
  freqs = jnp.exp(-math.log(10000.0) * jnp.arange(half, dtype=jnp.float32) / half)
  a = c_noise[:, None].astype(jnp.float32) * freqs[None]
  return jnp.concatenate([jnp.cos(a), jnp.sin(a)], axis=-1)


class ResBlock(nn.Module):
  """GN → SiLU → conv → +emb shift → GN → SiLU → conv (zero-init), plus the (1×1) skip, /√2."""
  features: int

  @nn.compact
  def __call__(self, x: Array, emb: Array) -> Array:
    h = nn.Conv(self.features, (3, 3), name='conv0')(
        nn.silu(nn.GroupNorm(_groups(x.shape[-1]), name='norm0')(x)))
    h = h + nn.Dense(self.features, name='emb')(emb)[:, None, None, :]
    h = nn.silu(nn.GroupNorm(_groups(self.features), name='norm1')(h))
    # Zero-initialised last conv: every block starts as the identity on its skip path (DDPM/ADM).
    h = nn.Conv(self.features, (3, 3), kernel_init=nn.initializers.zeros, name='conv1')(h)
    skip = x if x.shape[-1] == self.features else nn.Conv(self.features, (1, 1), name='skip')(x)
    return (h + skip) * (1.0 / math.sqrt(2.0))


class SelfAttention(nn.Module):
  """Single-head self-attention over H·W positions, residual, zero-initialised output projection."""

  @nn.compact
  def __call__(self, x: Array) -> Array:
    b, h, w, c = x.shape
    qkv = nn.Dense(3 * c, name='qkv')(nn.GroupNorm(_groups(c), name='norm')(x)).reshape(
        b, h * w, 3, c)
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
    attn = nn.softmax(jnp.einsum('bqc,bkc->bqk', q, k) / math.sqrt(c), axis=-1)
    out = jnp.einsum('bqk,bkc->bqc', attn, v).reshape(b, h, w, c)
    return x + nn.Dense(c, kernel_init=nn.initializers.zeros, name='proj')(out)


class Upsample(nn.Module):
  features: int

  @nn.compact
  def __call__(self, x: Array) -> Array:
    return nn.Conv(self.features, (3, 3), name='conv')(layers.upsample(x, 'nearest'))


class EDMUNet(nn.Module):
  """D(x; σ) = c_skip·x + c_out·F(c_in·x, c_noise), F a small U-Net (see the module docstring).

  Attributes:
    img_channels: image channels (1 for Fashion-MNIST).
    channels: width of the first level; level l has channels · channel_mult[l].
    channel_mult: one entry per resolution level (each but the last halves H and W).
    num_blocks: residual blocks per level in the encoder (the decoder has one more).
    attention: self-attention in the middle (lowest resolution).
    num_classes: > 0 for a class-conditional denoiser (`labels` then shift the embedding).
    precond: 'edm' (teachers, compressed and progressive students) or 'consistency' (consistency
      students: f(x, σ_min) = x); the same parameters fit both.
    sigma_data, sigma_min: of the preconditioning.
  """
  img_channels: int = 1
  channels: int = 16
  channel_mult: Sequence[int] = (1, 2, 4)
  num_blocks: int = 1
  attention: bool = False
  num_classes: int = 0
  precond: str = 'edm'
  sigma_data: float = edm.SIGMA_DATA
  sigma_min: float = edm.SIGMA_MIN

  kd_jax_kind = 'denoiser'

  def _check(self, x: Array) -> None:
    layers.check_positive(self.channels, 'EDMUNet.channels')
    layers.check_positive(self.num_blocks, 'EDMUNet.num_blocks')
    layers.check_choice(self.precond, edm.PRECONDITIONINGS, 'EDMUNet.precond')
    mult = tuple(self.channel_mult)
    if not mult or any(not isinstance(m, int) or m < 1 for m in mult):
      raise errors.ConfigError(f'EDMUNet.channel_mult={self.channel_mult!r} must be a non-empty '
                               'list of positive ints, e.g. [1, 2, 4].')
    if x.ndim != 4 or x.shape[-1] != self.img_channels:
      raise errors.ConfigError(f'EDMUNet got images of shape {x.shape}; expected [B, H, W, '
                               f'{self.img_channels}] (img_channels={self.img_channels}).')
    size = min(x.shape[1:3])
    if size % (2 ** (len(mult) - 1)):
      raise errors.ConfigError(f'EDMUNet: {len(mult)} levels halve {x.shape[1]}×{x.shape[2]} '
                               f'images {len(mult) - 1} times, which needs a multiple of '
                               f'{2 ** (len(mult) - 1)}; use fewer channel_mult entries.')

  @nn.compact
  def __call__(self, x: Array, sigma: Array, labels: Array | None = None, train: bool = False
               ) -> Array:
    del train  # no dropout or batch statistics
    self._check(x)
    sigma = jnp.broadcast_to(jnp.asarray(sigma, jnp.float32).reshape(-1), (x.shape[0],))
    c_skip, c_out, c_in, c_noise = edm.scalings(sigma, sigma_data=self.sigma_data,
                                                precond=self.precond, sigma_min=self.sigma_min)
    bc = lambda c: c[:, None, None, None]
    emb_dim = 4 * self.channels
    emb = noise_embedding(c_noise, self.channels)
    if self.num_classes:
      emb = emb + layers.class_embedding(labels, x.shape[0], self.num_classes, self.channels,
                                         jnp.float32)
    emb = nn.Dense(emb_dim, name='emb1')(nn.silu(nn.Dense(emb_dim, name='emb0')(emb)))
    emb = nn.silu(emb)

    mult = tuple(self.channel_mult)
    h = nn.Conv(self.channels * mult[0], (3, 3), name='stem')(bc(c_in) * x)
    skips = [h]
    for lvl, m in enumerate(mult):
      for b in range(self.num_blocks):
        h = ResBlock(self.channels * m, name=f'enc{lvl}_{b}')(h, emb)
        skips.append(h)
      if lvl < len(mult) - 1:
        h = layers.downsample(h)
        skips.append(h)
    h = ResBlock(self.channels * mult[-1], name='mid0')(h, emb)
    if self.attention:
      h = SelfAttention(name='mid_attn')(h)
    h = ResBlock(self.channels * mult[-1], name='mid1')(h, emb)
    for lvl in reversed(range(len(mult))):
      for b in range(self.num_blocks + 1):
        h = ResBlock(self.channels * mult[lvl], name=f'dec{lvl}_{b}')(
            jnp.concatenate([h, skips.pop()], axis=-1), emb)
      if lvl > 0:
        h = Upsample(self.channels * mult[lvl - 1], name=f'up{lvl}')(h)
    h = nn.silu(nn.GroupNorm(_groups(h.shape[-1]), name='out_norm')(h))
    f = nn.Conv(self.img_channels, (3, 3), kernel_init=nn.initializers.zeros, name='out')(h)
    return bc(c_skip) * x + bc(c_out) * f
