"""torchvision's ImageNet ResNets, layer for layer, so torchvision weights load and export exactly.

Unlike kd_jax's CIFAR `resnet.ResNet` (3×3 stem, three stages), this is torchvision's
`ResNet(block, layers, groups, width_per_group)`: 7×7/2 stem, 3×3/2 max-pool, four stages, stride in
the 3×3 conv (v1.5), projection shortcut `downsample`, BatchNorm eps 1e-5. Inputs are NHWC.

Module paths are torchvision's module names with '/' for '.': `conv1`, `bn1`, `maxpool` (stem
output), `layer1`..`layer4`, `layer<i>/<j>` (block j), `layer<i>/<j>/conv2`, `avgpool` (pooled
embedding [B, C]; kd_jax's native models call it 'features'), `fc` (logits).
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from kd_jax import errors
# `layers` is also a field of TorchvisionResNet (the torchvision argument name), hence the alias.
from kd_jax.models import layers as kd_layers
from kd_jax.types import Array

BLOCKS = ('basic', 'bottleneck')
_EXPANSION = {'basic': 1, 'bottleneck': 4}
_PLANES = (64, 128, 256, 512)


def conv(features: int, k: int, strides: int = 1, groups: int = 1, *, dtype: kd_layers.Dtype,
         name: str) -> nn.Conv:
  """torch's Conv2d(k, stride, padding=k//2, bias=False): explicit symmetric padding, because
  'SAME' pads stride-2 convs asymmetrically ((2, 3) for the 7×7 stem) and shifts every output."""
  return nn.Conv(features, (k, k), (strides, strides), padding=((k // 2, k // 2),) * 2,
                 feature_group_count=groups, use_bias=False, dtype=dtype, name=name)


def batch_norm(train: bool, *, dtype: kd_layers.Dtype, name: str) -> nn.BatchNorm:
  """torch's BatchNorm2d defaults: eps 1e-5, momentum 0.1 (Flax counts it as the decay 0.9)."""
  return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=dtype,
                      name=name)


class Downsample(nn.Module):
  """The projection shortcut, torch's `Sequential(conv1x1, BatchNorm2d)`: children '0' and '1'."""
  features: int
  strides: int
  dtype: kd_layers.Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, train: bool = False) -> Array:
    x = conv(self.features, 1, self.strides, dtype=self.dtype, name='0')(x)
    return batch_norm(train, dtype=self.dtype, name='1')(x)


class BasicBlock(nn.Module):
  """conv3×3(stride)-BN-ReLU-conv3×3-BN + shortcut, then ReLU."""
  planes: int
  strides: int = 1
  downsample: bool = False
  dtype: kd_layers.Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, train: bool = False) -> Array:
    d = self.dtype
    y = nn.relu(batch_norm(train, dtype=d, name='bn1')(
        conv(self.planes, 3, self.strides, dtype=d, name='conv1')(x)))
    y = batch_norm(train, dtype=d, name='bn2')(conv(self.planes, 3, dtype=d, name='conv2')(y))
    if self.downsample:
      x = Downsample(self.planes, self.strides, dtype=d, name='downsample')(x, train)
    return nn.relu(x + y)


class Bottleneck(nn.Module):
  """conv1×1-BN-ReLU, grouped conv3×3(stride)-BN-ReLU, conv1×1 (×4 channels)-BN + shortcut, ReLU."""
  planes: int
  strides: int = 1
  downsample: bool = False
  groups: int = 1
  width_per_group: int = 64
  dtype: kd_layers.Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, train: bool = False) -> Array:
    d = self.dtype
    width = int(self.planes * (self.width_per_group / 64.0)) * self.groups
    y = nn.relu(batch_norm(train, dtype=d, name='bn1')(conv(width, 1, dtype=d, name='conv1')(x)))
    y = nn.relu(batch_norm(train, dtype=d, name='bn2')(
        conv(width, 3, self.strides, self.groups, dtype=d, name='conv2')(y)))
    y = batch_norm(train, dtype=d, name='bn3')(
        conv(self.planes * 4, 1, dtype=d, name='conv3')(y))
    if self.downsample:
      x = Downsample(self.planes * 4, self.strides, dtype=d, name='downsample')(x, train)
    return nn.relu(x + y)


class Layer(nn.Module):
  """One stage, torch's `Sequential` of blocks '0', '1', ...; the first changes stride/width."""
  block: str
  num_blocks: int
  planes: int
  strides: int
  groups: int = 1
  width_per_group: int = 64
  dtype: kd_layers.Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, train: bool = False) -> Array:
    out = self.planes * _EXPANSION[self.block]
    for j in range(self.num_blocks):
      strides = self.strides if j == 0 else 1
      downsample = j == 0 and (strides != 1 or x.shape[-1] != out)
      if self.block == 'basic':
        x = BasicBlock(self.planes, strides, downsample, dtype=self.dtype, name=str(j))(x, train)
      else:
        x = Bottleneck(self.planes, strides, downsample, self.groups, self.width_per_group,
                       dtype=self.dtype, name=str(j))(x, train)
    return x


class MaxPool(nn.Module):
  """torch's MaxPool2d(3, 2, padding=1) (padding never wins: Flax pads max-pools with -inf)."""

  @nn.compact
  def __call__(self, x: Array) -> Array:
    return nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))


class TorchvisionResNet(nn.Module):
  """torchvision `ResNet(block, layers, num_classes, groups, width_per_group)`.

  resnet18: block='basic', layers=(2, 2, 2, 2); resnet50: 'bottleneck', (3, 4, 6, 3);
  resnext50_32x4d: groups=32, width_per_group=4; wide_resnet50_2: width_per_group=128.
  """
  num_classes: int = 1000
  block: str = 'basic'
  layers: Sequence[int] = (2, 2, 2, 2)
  groups: int = 1
  width_per_group: int = 64
  dtype: kd_layers.Dtype = jnp.float32

  def __post_init__(self) -> None:
    super().__post_init__()
    name = type(self).__name__
    kd_layers.check_positive(self.num_classes, f'{name}.num_classes')
    kd_layers.check_choice(self.block, BLOCKS, f'{name}.block')
    if (not isinstance(self.layers, (list, tuple)) or len(self.layers) != 4
        or not all(isinstance(n, int) and n >= 1 for n in self.layers)):
      raise errors.ConfigError(f'{name}.layers={self.layers!r} must be 4 positive ints, the '
                               'blocks per stage (e.g. [2, 2, 2, 2] for resnet18).')
    kd_layers.check_positive(self.groups, f'{name}.groups')
    kd_layers.check_positive(self.width_per_group, f'{name}.width_per_group')
    if self.block == 'basic' and (self.groups != 1 or self.width_per_group != 64):
      raise errors.ConfigError(f"{name}: block='basic' supports only groups=1 and "
                               "width_per_group=64 (as torchvision); use block='bottleneck'.")

  @nn.compact
  def __call__(self, x: Array, train: bool = False) -> Array:
    d = self.dtype
    x = nn.relu(batch_norm(train, dtype=d, name='bn1')(conv(64, 7, 2, dtype=d, name='conv1')(x)))
    x = MaxPool(name='maxpool')(x)
    for i, (n, planes) in enumerate(zip(self.layers, _PLANES)):
      x = Layer(self.block, n, planes, 1 if i == 0 else 2, self.groups, self.width_per_group,
                dtype=d, name=f'layer{i + 1}')(x, train)
    x = kd_layers.GlobalAvgPool(name='avgpool')(x)
    return nn.Dense(self.num_classes, dtype=d, name='fc')(x).astype(jnp.float32)
