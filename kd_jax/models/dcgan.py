"""DCGAN-style generator and discriminator (Radford et al. 2016), sized by one `width`.

The generator upsamples with nearest-neighbour ×2 + 3×3 conv instead of the paper's transposed
convs: on CPU, XLA's ConvTranspose made a training step ~3× slower than PyTorch's, while
upsample+conv is ~2.3× faster (measure with `benchmarks/bench_upsample_vs_convtranspose.py`;
`upsample='conv_transpose'` keeps the original for that comparison). Upsample+conv also avoids
checkerboard artefacts (Odena et al. 2016).

Generator feature paths: `embed` (if conditional), `project` ([B, s, s, C] start map), `block0`..,
`to_rgb`. Discriminator: `block0`.., `features` (flattened), `head`.
"""
from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from kd_jax import errors
from kd_jax.models import layers
from kd_jax.types import Array

GENERATOR_UPSAMPLE = ('nearest', 'bilinear', 'conv_transpose')
DISCRIMINATOR_NORMS = ('none', 'layer')


class Project(nn.Module):
  """Dense latent → [B, s, s, C] map, BatchNorm, ReLU: the generator's starting feature map."""
  size: int
  features: int
  dtype: layers.Dtype = jnp.float32

  @nn.compact
  def __call__(self, h: Array, train: bool = False) -> Array:
    x = nn.Dense(self.size * self.size * self.features, use_bias=False, dtype=self.dtype,
                 name='dense')(h)
    x = x.reshape(h.shape[0], self.size, self.size, self.features)
    x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=self.dtype,
                     name='bn')(x)
    return nn.relu(x)


class UpBlock(nn.Module):
  """×2 upsampling (resize + 3×3 conv, or a 4×4 stride-2 ConvTranspose) → BatchNorm → ReLU."""
  features: int
  method: str = 'nearest'
  dtype: layers.Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, train: bool = False) -> Array:
    if self.method == 'conv_transpose':
      x = nn.ConvTranspose(self.features, (4, 4), strides=(2, 2), padding='SAME', use_bias=False,
                           dtype=self.dtype, name='conv')(x)
    else:
      x = nn.Conv(self.features, (3, 3), padding='SAME', use_bias=False, dtype=self.dtype,
                  name='conv')(layers.upsample(x, self.method))
    x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=self.dtype,
                     name='bn')(x)
    return nn.relu(x)


class DCGANGenerator(nn.Module):
  """z [B, latent_dim] (+ labels [B]) → images [B, resolution, resolution, channels] in [-1, 1].

  Channels halve at each ×2 step, from width·2**steps at the start map to `width` at the last
  block (28 px: 7×7 → 14 → 28; 32 px: 4×4 → 8 → 16 → 32). Params and FLOPs scale ~width².
  """
  latent_dim: int = 128
  width: int = 64
  resolution: int = 32
  channels: int = 3
  num_classes: int = 0
  embed_dim: int = 32
  upsample: str = 'nearest'
  dtype: layers.Dtype = jnp.float32

  def __post_init__(self) -> None:
    super().__post_init__()
    for field in ('latent_dim', 'width', 'channels', 'embed_dim'):
      layers.check_positive(getattr(self, field), f'{type(self).__name__}.{field}')
    if not isinstance(self.num_classes, int) or self.num_classes < 0:
      raise errors.ConfigError(f'{type(self).__name__}.num_classes={self.num_classes!r} must be 0 '
                               '(unconditional) or the number of classes.')
    layers.pyramid(self.resolution, type(self).__name__)
    layers.check_choice(self.upsample, GENERATOR_UPSAMPLE, f'{type(self).__name__}.upsample')

  @nn.compact
  def __call__(self, z: Array, labels: Array | None = None, train: bool = False) -> Array:
    layers.check_latent(z, self.latent_dim, type(self).__name__)
    start, steps = layers.pyramid(self.resolution, type(self).__name__)
    h = z.astype(self.dtype)
    if self.num_classes:
      h = jnp.concatenate([h, layers.class_embedding(labels, z.shape[0], self.num_classes,
                                              self.embed_dim, self.dtype)], axis=-1)
    x = Project(start, self.width * 2**steps, dtype=self.dtype, name='project')(h, train)
    for i in range(steps):
      x = UpBlock(self.width * 2**(steps - 1 - i), self.upsample, dtype=self.dtype,
                  name=f'block{i}')(x, train)
    x = nn.Conv(self.channels, (3, 3), padding='SAME', dtype=self.dtype, name='to_rgb')(x)
    return jnp.tanh(x).astype(jnp.float32)


class DownBlock(nn.Module):
  """4×4 stride-2 conv → optional LayerNorm → LeakyReLU(0.2)."""
  features: int
  norm: str = 'none'
  dtype: layers.Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    x = nn.Conv(self.features, (4, 4), strides=(2, 2), padding='SAME', dtype=self.dtype,
                name='conv')(x)
    if self.norm == 'layer':
      x = nn.LayerNorm(reduction_axes=(1, 2, 3), dtype=self.dtype, name='ln')(x)
    return nn.leaky_relu(x, 0.2)


class Flatten(nn.Module):
  @nn.compact
  def __call__(self, x: Array) -> Array:
    return x.reshape(x.shape[0], -1)


class DCGANDiscriminator(nn.Module):
  """images [B, H, W, C] (+ labels [B]) → logits [B], with projection conditioning (Miyato &
  Koyama 2018).

  No BatchNorm, so each example's logit depends only on that example and the R1 penalty
  (Mescheder et al. 2018) is well defined; `norm='layer'` normalises per example.
  Channels double per stride-2 block from `width`, down to a 7×7 (28 px) or 4×4 (32 px) map.
  """
  width: int = 64
  num_classes: int = 0
  norm: str = 'none'
  dtype: layers.Dtype = jnp.float32

  def __post_init__(self) -> None:
    super().__post_init__()
    layers.check_positive(self.width, f'{type(self).__name__}.width')
    if not isinstance(self.num_classes, int) or self.num_classes < 0:
      raise errors.ConfigError(f'{type(self).__name__}.num_classes={self.num_classes!r} must be 0 '
                               '(unconditional) or the number of classes.')
    layers.check_choice(self.norm, DISCRIMINATOR_NORMS, f'{type(self).__name__}.norm')

  @nn.compact
  def __call__(self, x: Array, labels: Array | None = None, train: bool = False) -> Array:
    _, steps = layers.pyramid(x.shape[1], 'discriminator input')
    x = x.astype(self.dtype)
    for i in range(max(steps, 1)):
      # The first block stays unnormalised, as in DCGAN.
      x = DownBlock(self.width * 2**i, self.norm if i else 'none', dtype=self.dtype,
                    name=f'block{i}')(x)
    h = Flatten(name='features')(x)
    logits = nn.Dense(1, dtype=self.dtype, name='head')(h)[:, 0]
    if self.num_classes:
      emb = layers.class_embedding(labels, x.shape[0], self.num_classes, h.shape[-1], self.dtype)
      logits = logits + jnp.sum(emb * h, axis=-1)
    return logits.astype(jnp.float32)
