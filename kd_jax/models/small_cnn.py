"""A small plain CNN: the cheapest classifier student.

Feature paths: `stage1`..`stage3` (each `convs_per_stage` ConvBN layers `conv<j>`; stages 2 and 3
halve the resolution), `features` (pooled embedding [B, 4·width]), `head` (logits).
"""
from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from kd_jax.models import layers
from kd_jax.types import Array


class SmallStage(nn.Module):
  """`num_convs` 3×3 ConvBN-ReLU layers; the first uses `strides`."""
  features: int
  num_convs: int
  strides: int
  dtype: layers.Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, train: bool = False) -> Array:
    for j in range(self.num_convs):
      x = layers.ConvBN(self.features, 3, self.strides if j == 0 else 1, dtype=self.dtype,
                        name=f'conv{j}')(x, train)
    return x


class SmallCNN(nn.Module):
  """Three stages of 3×3 convs with widths w, 2w, 4w, global average pooling and a dense head.

  At width 16 it has ~25k parameters and ~1/14 of resnet20's FLOPs.
  """
  num_classes: int = 10
  width: int = 16
  convs_per_stage: int = 1
  dtype: layers.Dtype = jnp.float32

  def __post_init__(self) -> None:
    super().__post_init__()
    layers.check_positive(self.num_classes, f'{type(self).__name__}.num_classes')
    layers.check_positive(self.width, f'{type(self).__name__}.width')
    layers.check_positive(self.convs_per_stage, f'{type(self).__name__}.convs_per_stage')

  @nn.compact
  def __call__(self, x: Array, train: bool = False) -> Array:
    for i, mult in enumerate((1, 2, 4)):
      x = SmallStage(self.width * mult, self.convs_per_stage, 1 if i == 0 else 2,
                     dtype=self.dtype, name=f'stage{i + 1}')(x, train)
    x = layers.GlobalAvgPool(name='features')(x)
    return nn.Dense(self.num_classes, dtype=self.dtype, name='head')(x).astype(jnp.float32)
