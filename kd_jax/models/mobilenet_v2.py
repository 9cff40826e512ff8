"""MobileNetV2 (Sandler et al. 2018) with CIFAR-style strides: a compact classifier student.

Feature paths: `stem`, `stage1`..`stage7`, `stage<i>/block<j>` (with `expand`, `depthwise`,
`project` inside), `last`, `features` (pooled embedding), `head` (logits).
"""
from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from kd_jax import errors
from kd_jax.models import layers, torchvision_mobilenet_v2
from kd_jax.types import Array

# (expansion t, channels c, blocks n, stride s) per stage, from the paper's Table 2, except that
# the stem and the second stage keep stride 1: on 28–32 px inputs the ImageNet strides would leave
# 1×1 maps.
_STAGES = ((1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
           (6, 160, 3, 2), (6, 320, 1, 1))


# Channels rounded to a multiple of 8 without dropping more than 10% (as in the paper's code).
_divisible = torchvision_mobilenet_v2.make_divisible


class InvertedResidual(nn.Module):
  """1×1 expand (ReLU6) → 3×3 depthwise (ReLU6) → 1×1 linear projection (+ input if same shape)."""
  features: int
  strides: int
  expansion: int
  dtype: layers.Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, train: bool = False) -> Array:
    hidden = x.shape[-1] * self.expansion
    y = x
    if self.expansion != 1:
      y = layers.ConvBN(hidden, 1, act=nn.relu6, dtype=self.dtype, name='expand')(y, train)
    y = layers.ConvBN(hidden, 3, self.strides, groups=hidden, act=nn.relu6, dtype=self.dtype,
                      name='depthwise')(y, train)
    y = layers.ConvBN(self.features, 1, act=None, dtype=self.dtype, name='project')(y, train)
    return x + y if self.strides == 1 and x.shape[-1] == self.features else y


class MobileNetV2Stage(nn.Module):
  features: int
  num_blocks: int
  strides: int
  expansion: int
  dtype: layers.Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, train: bool = False) -> Array:
    for j in range(self.num_blocks):
      x = InvertedResidual(self.features, self.strides if j == 0 else 1, self.expansion,
                           dtype=self.dtype, name=f'block{j}')(x, train)
    return x


class MobileNetV2(nn.Module):
  """MobileNetV2; `width_multiplier` scales every layer's channels (the paper's α)."""
  num_classes: int = 10
  width_multiplier: float = 1.0
  dtype: layers.Dtype = jnp.float32

  def __post_init__(self) -> None:
    super().__post_init__()
    layers.check_positive(self.num_classes, f'{type(self).__name__}.num_classes')
    if not isinstance(self.width_multiplier, (int, float)) or self.width_multiplier <= 0:
      raise errors.ConfigError(f'{type(self).__name__}.width_multiplier={self.width_multiplier!r} '
                               'must be a positive number (e.g. 0.5, 1.0).')

  @nn.compact
  def __call__(self, x: Array, train: bool = False) -> Array:
    a = self.width_multiplier
    x = layers.ConvBN(_divisible(32 * a), 3, 1, act=nn.relu6, dtype=self.dtype,
                      name='stem')(x, train)
    for i, (t, c, n, s) in enumerate(_STAGES):
      x = MobileNetV2Stage(_divisible(c * a), n, s, t, dtype=self.dtype,
                           name=f'stage{i + 1}')(x, train)
    # As in the paper, the last layer is not narrowed below 1280 channels for α < 1.
    x = layers.ConvBN(_divisible(1280 * max(1.0, a)), 1, act=nn.relu6, dtype=self.dtype,
                      name='last')(x, train)
    x = layers.GlobalAvgPool(name='features')(x)
    return nn.Dense(self.num_classes, dtype=self.dtype, name='head')(x).astype(jnp.float32)
