"""torchvision's MobileNetV2, layer for layer, so torchvision weights load and export exactly.

Unlike kd_jax's CIFAR-strided `mobilenet_v2.MobileNetV2`, this is torchvision's
`mobilenet_v2(width_mult, num_classes)`: ImageNet strides (3×3/2 stem, /32 overall), channels
rounded by torchvision's `_make_divisible`, ReLU6, BatchNorm eps 1e-5, Dropout(0.2) before the
classifier (active only when training). Inputs are NHWC.

Module paths are torchvision's module names with '/' for '.': `features` (the conv trunk, [B, H/32,
W/32, C]), `features/0` (stem), `features/<i>` (InvertedResidual i, 1..17), `features/<i>/conv/<j>`,
`features/18` (last 1×1 conv), `avgpool` (pooled embedding [B, C]; kd_jax's native models call it
'features'), `classifier` (logits).
"""
from __future__ import annotations

from typing import Callable

import flax.linen as nn
import jax.numpy as jnp

from kd_jax import errors
from kd_jax.models import layers
from kd_jax.types import Array

# torchvision's inverted_residual_setting: (expansion t, channels c, blocks n, stride s).
SETTING = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
           (6, 160, 3, 2), (6, 320, 1, 1))
STEM_CHANNELS, LAST_CHANNELS = 32, 1280


def make_divisible(v: float, divisor: int = 8) -> int:
  """torchvision's `_make_divisible`: nearest multiple of `divisor`, never more than 10% below v."""
  new = max(divisor, int(v + divisor / 2) // divisor * divisor)
  return new + divisor if new < 0.9 * v else new


def channels(width_mult: float, round_nearest: int = 8) -> dict[str, object]:
  """The widths torchvision derives from `width_mult`: stem, blocks (in, out, t, stride), last."""
  stem = make_divisible(STEM_CHANNELS * width_mult, round_nearest)
  blocks, inp = [], stem
  for t, c, n, s in SETTING:
    out = make_divisible(c * width_mult, round_nearest)
    for j in range(n):
      blocks.append((inp, out, t, s if j == 0 else 1))
      inp = out
  last = make_divisible(LAST_CHANNELS * max(1.0, width_mult), round_nearest)
  return {'stem': stem, 'blocks': blocks, 'last': last}


class ConvBNAct(nn.Module):
  """torchvision's Conv2dNormActivation: conv '0' (padding k//2, no bias), BN '1', ReLU6."""
  features: int
  kernel_size: int = 3
  strides: int = 1
  groups: int = 1
  act: Callable[[Array], Array] | None = nn.relu6
  dtype: layers.Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, train: bool = False) -> Array:
    k, p = self.kernel_size, self.kernel_size // 2
    # Explicit symmetric padding: 'SAME' pads stride-2 convs (0, 1) where torch pads (1, 1).
    x = nn.Conv(self.features, (k, k), (self.strides, self.strides), padding=((p, p), (p, p)),
                feature_group_count=self.groups, use_bias=False, dtype=self.dtype, name='0')(x)
    x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=self.dtype,
                     name='1')(x)
    return self.act(x) if self.act is not None else x


class InvertedResidualBody(nn.Module):
  """torch's `InvertedResidual.conv` Sequential: [expand '0'], depthwise, project conv, BN."""
  features: int
  strides: int
  expansion: int
  dtype: layers.Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, train: bool = False) -> Array:
    hidden = int(round(x.shape[-1] * self.expansion))
    i = 0
    if self.expansion != 1:
      x = ConvBNAct(hidden, 1, dtype=self.dtype, name=str(i))(x, train)
      i += 1
    x = ConvBNAct(hidden, 3, self.strides, hidden, dtype=self.dtype, name=str(i))(x, train)
    x = nn.Conv(self.features, (1, 1), use_bias=False, dtype=self.dtype, name=str(i + 1))(x)
    return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                        dtype=self.dtype, name=str(i + 2))(x)


class InvertedResidual(nn.Module):
  """The body, plus the input when stride is 1 and the width is unchanged."""
  features: int
  strides: int
  expansion: int
  dtype: layers.Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, train: bool = False) -> Array:
    y = InvertedResidualBody(self.features, self.strides, self.expansion, dtype=self.dtype,
                             name='conv')(x, train)
    return x + y if self.strides == 1 and x.shape[-1] == self.features else y


class Features(nn.Module):
  """torch's `features` Sequential: stem '0', inverted residuals '1'..'17', last 1×1 conv '18'."""
  width_mult: float
  round_nearest: int = 8
  dtype: layers.Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, train: bool = False) -> Array:
    widths = channels(self.width_mult, self.round_nearest)
    x = ConvBNAct(widths['stem'], 3, 2, dtype=self.dtype, name='0')(x, train)
    for i, (_, out, t, s) in enumerate(widths['blocks']):
      x = InvertedResidual(out, s, t, dtype=self.dtype, name=str(i + 1))(x, train)
    return ConvBNAct(widths['last'], 1, dtype=self.dtype,
                     name=str(len(widths['blocks']) + 1))(x, train)


class TorchvisionMobileNetV2(nn.Module):
  """torchvision `mobilenet_v2(width_mult, num_classes)`; `dropout` is active only when training
  (it needs a 'dropout' rng then)."""
  num_classes: int = 1000
  width_mult: float = 1.0
  round_nearest: int = 8
  dropout: float = 0.2
  dtype: layers.Dtype = jnp.float32

  def __post_init__(self) -> None:
    super().__post_init__()
    name = type(self).__name__
    layers.check_positive(self.num_classes, f'{name}.num_classes')
    layers.check_positive(self.round_nearest, f'{name}.round_nearest')
    if (not isinstance(self.width_mult, (int, float)) or isinstance(self.width_mult, bool)
        or self.width_mult <= 0):
      raise errors.ConfigError(f'{name}.width_mult={self.width_mult!r} must be a positive number '
                               '(e.g. 0.5, 1.0).')
    if not isinstance(self.dropout, (int, float)) or not 0 <= self.dropout < 1:
      raise errors.ConfigError(f'{name}.dropout={self.dropout!r} must be in [0, 1).')

  @nn.compact
  def __call__(self, x: Array, train: bool = False) -> Array:
    x = Features(self.width_mult, self.round_nearest, dtype=self.dtype, name='features')(x, train)
    x = layers.GlobalAvgPool(name='avgpool')(x)
    x = nn.Dropout(self.dropout, deterministic=not train)(x)
    # torch's classifier is Sequential(Dropout, Linear): the Linear is its child '1'.
    return Classifier(self.num_classes, dtype=self.dtype, name='classifier')(x).astype(jnp.float32)


class Classifier(nn.Module):
  """The Linear '1' of torch's `classifier` Sequential (its '0' is the dropout, without weights)."""
  num_classes: int
  dtype: layers.Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    return nn.Dense(self.num_classes, dtype=self.dtype, name='1')(x)
