"""Building blocks shared by the model families: ConvBN, resampling, pooling, class embedding."""
from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from kd_jax import errors
from kd_jax.types import Array

Dtype = Any
UPSAMPLE_METHODS = ('nearest', 'bilinear')


def upsample(x: Array, method: str = 'nearest') -> Array:
  """Doubles H and W of an NHWC map.

  'nearest' is a broadcast + reshape (no gather), which XLA on CPU runs much faster than a
  ConvTranspose of the same output size; 'bilinear' uses `jax.image.resize` (half-pixel centres).
  """
  b, h, w, c = x.shape
  if method == 'nearest':
    x = jnp.broadcast_to(x[:, :, None, :, None, :], (b, h, 2, w, 2, c))
    return x.reshape(b, 2 * h, 2 * w, c)
  if method == 'bilinear':
    return jax.image.resize(x, (b, 2 * h, 2 * w, c), method='bilinear').astype(x.dtype)
  raise errors.ConfigError(f"upsample method {method!r} is unknown; set the model's upsample "
                           f"argument to one of {UPSAMPLE_METHODS}.")


def downsample(x: Array) -> Array:
  """Halves H and W by 2×2 average pooling (odd sizes: the last row/column is dropped)."""
  return nn.avg_pool(x, (2, 2), strides=(2, 2), padding='VALID')


def pyramid(resolution: int, owner: str) -> tuple[int, int]:
  """(start size, number of ×2 steps) with start · 2**steps == resolution, start ≤ 7 if possible.

  28 → (7, 2) and 32 → (4, 3): generators grow from a 7×7 or 4×4 map, discriminators shrink to it.
  `owner` names what the resolution belongs to in the error message (e.g. 'DCGANGenerator').
  """
  if not isinstance(resolution, int) or resolution < 4:
    raise errors.ConfigError(f'{owner}: resolution={resolution!r} must be an int >= 4 (e.g. 28 for '
                             'Fashion-MNIST, 32 for CIFAR).')
  start, steps = resolution, 0
  while start % 2 == 0 and start > 4:
    start, steps = start // 2, steps + 1
  return start, steps


def check_choice(value: Any, choices: tuple[Any, ...], name: str) -> None:
  """Raises ConfigError when `value` (the argument `name`, e.g. 'ResNet.width') is not in `choices`."""
  if value not in choices:
    raise errors.ConfigError(f'{name}={value!r} is not supported; set it to one of {choices}.')


def check_positive(value: Any, name: str) -> None:
  """Raises ConfigError unless `value` (the argument `name`, e.g. 'ResNet.width') is a positive int."""
  if not isinstance(value, int) or isinstance(value, bool) or value < 1:
    raise errors.ConfigError(f'{name}={value!r} must be a positive int.')


def class_embedding(labels: Array | None, batch: int, num_classes: int, dim: int,
                    dtype: Dtype) -> Array:
  """[B, dim] learned class embedding, a submodule `embed` of the calling module.

  Zeros when `labels` is None. The table is always created, so a conditional model initialised
  without labels can later be called with them; `labels=None` (e.g. for cost measurement)
  contributes nothing.
  """
  ids = labels if labels is not None else jnp.zeros((batch,), jnp.int32)
  emb = nn.Embed(num_classes, dim, dtype=dtype, name='embed')(ids)
  return emb if labels is not None else jnp.zeros_like(emb)


def check_latent(z: Array, latent_dim: int, name: str) -> None:
  """Raises ConfigError unless `z` is [B, latent_dim]."""
  if z.ndim != 2 or z.shape[-1] != latent_dim:
    raise errors.ConfigError(f'{name} got latents of shape {z.shape} but latent_dim={latent_dim}; '
                             'sample z as [B, latent_dim] with the latent_dim the model was built '
                             'with (teacher and student must share it).')


class ConvBN(nn.Module):
  """Conv → BatchNorm → optional activation; BN uses batch statistics only when `train`."""
  features: int
  kernel_size: int = 3
  strides: int = 1
  groups: int = 1
  act: Callable[[Array], Array] | None = nn.relu
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, train: bool = False) -> Array:
    k = (self.kernel_size, self.kernel_size)
    x = nn.Conv(self.features, k, strides=(self.strides, self.strides), padding='SAME',
                feature_group_count=self.groups, use_bias=False, dtype=self.dtype, name='conv')(x)
    x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=self.dtype,
                     name='bn')(x)
    return self.act(x) if self.act is not None else x


class GlobalAvgPool(nn.Module):
  """Mean over H and W: the penultimate embedding of a classifier, capturable at path 'features'."""

  @nn.compact
  def __call__(self, x: Array) -> Array:
    return jnp.mean(x, axis=(1, 2))
