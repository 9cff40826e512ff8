"""CIFAR-style ResNets (He et al. 2016) and Wide ResNets (Zagoruyko & Komodakis 2016): teachers.

Feature paths: `stem`, `stage1`..`stage3`, `stage<i>/block<j>`, `features` (pooled embedding
[B, C]), `head` (logits). Inputs are NHWC images of any size (≥ 28 px, 1 or 3 channels).
"""
from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from kd_jax import errors
from kd_jax.models import layers
from kd_jax.types import Array


class BasicBlock(nn.Module):
  """Post-activation residual block: conv-BN-ReLU-conv-BN + shortcut, then ReLU."""
  features: int
  strides: int = 1
  dtype: layers.Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, train: bool = False) -> Array:
    y = layers.ConvBN(self.features, 3, self.strides, dtype=self.dtype, name='conv1')(x, train)
    y = layers.ConvBN(self.features, 3, 1, act=None, dtype=self.dtype, name='conv2')(y, train)
    if self.strides != 1 or x.shape[-1] != self.features:
      # A 1×1 projection (option B of He et al.) keeps every block a plain module with parameters,
      # rather than option A's zero-padded identity.
      x = layers.ConvBN(self.features, 1, self.strides, act=None, dtype=self.dtype,
                        name='shortcut')(x, train)
    return nn.relu(x + y)


class Stage(nn.Module):
  """`num_blocks` residual blocks; the first one changes width/stride."""
  block: type[nn.Module]
  num_blocks: int
  features: int
  strides: int
  dtype: layers.Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, train: bool = False) -> Array:
    for j in range(self.num_blocks):
      x = self.block(self.features, self.strides if j == 0 else 1, dtype=self.dtype,
                     name=f'block{j}')(x, train)
    return x


class ResNet(nn.Module):
  """CIFAR ResNet of depth 6n+2: a 3×3 stem, three stages of n basic blocks (width w, 2w, 4w).

  resnet20 (n=3, w=16) has ~0.27M parameters; resnet56 (n=9) ~0.85M.
  """
  num_classes: int = 10
  depth: int = 20
  width: int = 16
  dtype: layers.Dtype = jnp.float32

  def __post_init__(self) -> None:
    super().__post_init__()
    layers.check_positive(self.num_classes, f'{type(self).__name__}.num_classes')
    layers.check_positive(self.width, f'{type(self).__name__}.width')
    if not isinstance(self.depth, int) or self.depth < 8 or (self.depth - 2) % 6:
      raise errors.ConfigError(f'{type(self).__name__}.depth={self.depth!r}: a CIFAR ResNet needs '
                               'depth = 6n+2 with n >= 1 (e.g. 20, 32, 56, 110).')

  @nn.compact
  def __call__(self, x: Array, train: bool = False) -> Array:
    n = (self.depth - 2) // 6
    x = layers.ConvBN(self.width, 3, 1, dtype=self.dtype, name='stem')(x, train)
    for i, mult in enumerate((1, 2, 4)):
      x = Stage(BasicBlock, n, self.width * mult, 1 if i == 0 else 2, dtype=self.dtype,
                name=f'stage{i + 1}')(x, train)
    x = layers.GlobalAvgPool(name='features')(x)
    return nn.Dense(self.num_classes, dtype=self.dtype, name='head')(x).astype(jnp.float32)


class WideBlock(nn.Module):
  """Pre-activation block of a WRN: BN-ReLU-conv3×3-BN-ReLU-conv3×3 + (projected) shortcut."""
  features: int
  strides: int = 1
  dtype: layers.Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, train: bool = False) -> Array:
    bn = lambda name: nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                                   dtype=self.dtype, name=name)
    conv = lambda k, s, name: nn.Conv(self.features, (k, k), (s, s), padding='SAME',
                                      use_bias=False, dtype=self.dtype, name=name)
    pre = nn.relu(bn('bn1')(x))
    y = conv(3, self.strides, 'conv1')(pre)
    y = conv(3, 1, 'conv2')(nn.relu(bn('bn2')(y)))
    if self.strides != 1 or x.shape[-1] != self.features:
      x = conv(1, self.strides, 'shortcut')(pre)
    return x + y


class WideResNet(nn.Module):
  """WRN-depth-k: depth = 6n+4, stages of n pre-activation blocks with widths 16k, 32k, 64k.

  `width` is the stem width (16 in the paper); stage widths are width·k·(1, 2, 4).
  """
  num_classes: int = 10
  depth: int = 16
  widen_factor: int = 2
  width: int = 16
  dtype: layers.Dtype = jnp.float32

  def __post_init__(self) -> None:
    super().__post_init__()
    layers.check_positive(self.num_classes, f'{type(self).__name__}.num_classes')
    layers.check_positive(self.width, f'{type(self).__name__}.width')
    layers.check_positive(self.widen_factor, f'{type(self).__name__}.widen_factor')
    if not isinstance(self.depth, int) or self.depth < 10 or (self.depth - 4) % 6:
      raise errors.ConfigError(f'{type(self).__name__}.depth={self.depth!r}: a Wide ResNet needs '
                               'depth = 6n+4 with n >= 1 (e.g. 16, 28, 40).')

  @nn.compact
  def __call__(self, x: Array, train: bool = False) -> Array:
    n = (self.depth - 4) // 6
    x = nn.Conv(self.width, (3, 3), padding='SAME', use_bias=False, dtype=self.dtype,
                name='stem')(x)
    for i, mult in enumerate((1, 2, 4)):
      x = Stage(WideBlock, n, self.width * self.widen_factor * mult, 1 if i == 0 else 2,
                dtype=self.dtype, name=f'stage{i + 1}')(x, train)
    # Pre-activation blocks leave the last stage un-normalised, hence a final BN-ReLU.
    x = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                             dtype=self.dtype, name='final_bn')(x))
    x = layers.GlobalAvgPool(name='features')(x)
    return nn.Dense(self.num_classes, dtype=self.dtype, name='head')(x).astype(jnp.float32)
