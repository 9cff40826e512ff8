"""Convolutional autoencoder for reconstruction and restoration (denoising / inpainting).

The same model serves both: for restoration the trainer corrupts the input and the target stays
clean. Feature paths: `encoder`, `encoder/stem`, `encoder/block<i>`, `latent` (the code:
[B, h, w, C] or [B, D]), `decoder`, `decoder/block<i>`, `decoder/to_image`.
"""
from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from kd_jax import errors
from kd_jax.models import layers
from kd_jax.types import Array

LATENT_KINDS = ('spatial', 'vector')


class Encoder(nn.Module):
  """3×3 stem, then `num_downsamples` stride-2 ConvBN-ReLU blocks doubling the channels."""
  width: int
  num_downsamples: int
  dtype: layers.Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, train: bool = False) -> Array:
    x = layers.ConvBN(self.width, 3, 1, dtype=self.dtype, name='stem')(x, train)
    for i in range(self.num_downsamples):
      x = layers.ConvBN(self.width * 2**(i + 1), 3, 2, dtype=self.dtype,
                        name=f'block{i}')(x, train)
    return x


class Latent(nn.Module):
  """The bottleneck: a 1×1 conv to `dim` channels (spatial) or flatten + dense to `dim` (vector)."""
  kind: str
  dim: int
  dtype: layers.Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    if self.kind == 'spatial':
      return nn.Conv(self.dim, (1, 1), dtype=self.dtype, name='proj')(x)
    return nn.Dense(self.dim, dtype=self.dtype, name='proj')(x.reshape(x.shape[0], -1))


class DecoderBlock(nn.Module):
  """Nearest ×2 upsample → 3×3 ConvBN-ReLU (no ConvTranspose: faster on CPU, no checkerboard)."""
  features: int
  dtype: layers.Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, train: bool = False) -> Array:
    return layers.ConvBN(self.features, 3, 1, dtype=self.dtype, name='conv')(
        layers.upsample(x, 'nearest'), train)


class Decoder(nn.Module):
  """Code → map of `bottleneck_shape` → `num_upsamples` DecoderBlocks → 3×3 conv → tanh."""
  width: int
  num_upsamples: int
  channels: int
  bottleneck_shape: tuple[int, int, int]
  dtype: layers.Dtype = jnp.float32

  @nn.compact
  def __call__(self, code: Array, train: bool = False) -> Array:
    h, w, c = self.bottleneck_shape
    if code.ndim == 2:
      code = nn.Dense(h * w * c, dtype=self.dtype, name='dense')(code).reshape(-1, h, w, c)
    x = layers.ConvBN(c, 1, 1, dtype=self.dtype, name='stem')(code, train)
    for i in range(self.num_upsamples):
      x = DecoderBlock(self.width * 2**(self.num_upsamples - 1 - i), dtype=self.dtype,
                       name=f'block{i}')(x, train)
    x = nn.Conv(self.channels, (3, 3), padding='SAME', dtype=self.dtype, name='to_image')(x)
    return jnp.tanh(x)


class ConvAutoencoder(nn.Module):
  """images [B, H, W, C] in [-1, 1] → reconstruction of the same shape in [-1, 1].

  H and W must be divisible by 2**num_downsamples (28 and 32 are, for the default 2). Params and
  FLOPs scale ~width²; `latent_dim` is the code's channels (spatial) or size (vector).
  """
  width: int = 32
  num_downsamples: int = 2
  latent: str = 'spatial'
  latent_dim: int = 16
  dtype: layers.Dtype = jnp.float32

  def __post_init__(self) -> None:
    super().__post_init__()
    for field in ('width', 'num_downsamples', 'latent_dim'):
      layers.check_positive(getattr(self, field), f'{type(self).__name__}.{field}')
    layers.check_choice(self.latent, LATENT_KINDS, f'{type(self).__name__}.latent')

  @nn.compact
  def __call__(self, x: Array, train: bool = False) -> Array:
    b, h, w, c = x.shape
    f = 2**self.num_downsamples
    if h % f or w % f:
      raise errors.ConfigError(
          f'conv_autoencoder with num_downsamples={self.num_downsamples} needs H and W divisible '
          f'by {f}, got {h}×{w}; set num_downsamples to an n with 2**n dividing both.')
    feats = Encoder(self.width, self.num_downsamples, self.dtype, name='encoder')(
        x.astype(self.dtype), train)
    code = Latent(self.latent, self.latent_dim, self.dtype, name='latent')(feats)
    out = Decoder(self.width, self.num_downsamples, c, feats.shape[1:], self.dtype,
                  name='decoder')(code, train)
    return out.astype(jnp.float32)
