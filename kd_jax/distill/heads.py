"""Trainable heads between student and teacher features: FitNets adapters and VID regressors.

Each head family is an "extra" of the distillation core: `init(rng, student_feats, teacher_feats)`
→ `(params, state)` and `apply(params, state, student_feats, teacher_feats, ...)` → `(outputs,
state)`, with outputs keyed as `kd_jax.keys` builds them. Their params live in
`params['extras'][name]` (trained with the student, checkpointed, never exported).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import flax.linen as nn

from kd_jax import errors, keys
from kd_jax.losses import _utils, feature
from kd_jax.types import Array, PyTree

ADAPTER_KINDS = ('conv1x1', 'conv_bn_relu')
Shape = tuple[int, ...]


def module_name(pair: tuple[str, str]) -> str:
  """A Flax submodule name for a (student path, teacher path) pair ('/' and ':' are not allowed)."""
  return f'{pair[0]}-{pair[1]}'.replace('/', '.')


class ConvReg(nn.Module):
  """RepDistiller's FitNets regressor `ConvReg`: a conv that maps the student's map to the teacher's
  shape, then BatchNorm and ReLU (Romero et al. 2015; HobbitLong/RepDistiller `models/util.py`).

  Student height 2× the teacher's: 3×3 stride-2 conv; half: 4×4 stride-2 transposed conv; otherwise
  (larger or equal) a VALID conv of size 1 + (H_s − H_t), i.e. 1×1 for equal sizes. Vectors: Dense.
  Flax's default init replaces PyTorch's.
  """
  out_shape: Shape  # the teacher's [H, W, C] (or [C] for vectors)

  @nn.compact
  def __call__(self, x: Array, train: bool) -> Array:
    c = self.out_shape[-1]
    if x.ndim == 2:
      x = nn.Dense(c, name='dense')(x)
    else:
      (hs, ws), (ht, wt) = x.shape[1:3], self.out_shape[:2]
      if hs == 2 * ht:
        x = nn.Conv(c, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)), name='conv')(x)
      elif 2 * hs == ht:
        x = nn.ConvTranspose(c, (4, 4), strides=(2, 2), padding='SAME', name='conv')(x)
      else:
        x = nn.Conv(c, (1 + hs - ht, 1 + ws - wt), padding='VALID', name='conv')(x)
    x = nn.BatchNorm(use_running_average=not train, momentum=0.9, name='bn')(x)
    return nn.relu(x)


class _Adapters(nn.Module):
  """One adapter per (student, teacher) pair: a 1×1 conv (Dense for vectors) or `ConvReg`."""
  pairs: tuple[tuple[str, str], ...]
  out_shapes: tuple[Shape, ...]
  kind: str

  @nn.compact
  def __call__(self, feats: Mapping[str, Array], train: bool) -> dict[str, Array]:
    out = {}
    for pair, shape in zip(self.pairs, self.out_shapes):
      x = feats[pair[0]]
      if self.kind == 'conv_bn_relu':
        y = ConvReg(shape, name=module_name(pair))(x, train)
      elif x.ndim == 2:
        y = nn.Dense(shape[-1], name=module_name(pair))(x)
      else:
        y = nn.Conv(shape[-1], (1,) * (x.ndim - 2), name=module_name(pair))(x)
      out[str(keys.Key(keys.ADAPTED, student=pair[0], teacher=pair[1]))] = y
    return out


class VIDRegressor(nn.Module):
  """VID's mean regressor, as the reference `VIDLoss`: conv1x1 → ReLU → conv1x1 → ReLU → conv1x1,
  bias-free, with `mid` = the teacher's channel count (Ahn et al. 2019; CRD repo `VIDLoss`)."""
  mid: int
  out: int

  @nn.compact
  def __call__(self, x: Array) -> Array:
    k = (1,) * (x.ndim - 2)
    x = nn.relu(nn.Conv(self.mid, k, use_bias=False, name='conv0')(x))
    x = nn.relu(nn.Conv(self.mid, k, use_bias=False, name='conv1')(x))
    return nn.Conv(self.out, k, use_bias=False, name='conv2')(x)


class _VID(nn.Module):
  pairs: tuple[tuple[str, str], ...]
  out_shapes: tuple[Shape, ...]

  @nn.compact
  def __call__(self, feats: Mapping[str, Array]) -> dict[str, Array]:
    out = {}
    for pair, shape in zip(self.pairs, self.out_shapes):
      x, c = feats[pair[0]], shape[-1]
      if x.ndim == 4 and x.shape[1] > shape[0]:
        # The reference pools the larger map to the smaller before regressing (VID.py).
        x = _utils.adaptive_avg_pool(x, shape[:2])
      k = dict(student=pair[0], teacher=pair[1])
      out[str(keys.Key(keys.VID_MEAN, **k))] = VIDRegressor(c, c, name=module_name(pair))(x)
      out[str(keys.Key(keys.VID_LOG_VARIANCE, **k))] = self.param(
          f'log_variance_{module_name(pair)}', lambda _, c=c: feature.vid_log_variance_init(c))
    return out


def check_adapter(pair: tuple[str, str], s_shape: Shape, t_shape: Shape, kind: str) -> None:
  """ConfigError when an adapter of `kind` cannot map the student's shape to the teacher's."""
  s, t = s_shape[1:], t_shape[1:]
  if len(s) != len(t):
    raise errors.ConfigError(f"adapter {pair[0]}:{pair[1]}: student {pair[0]} is {s} and teacher "
                             f'{pair[1]} is {t}; pick two feature maps or two vectors.')
  if len(s) == 1 or s[:-1] == t[:-1]:
    return
  if kind == 'conv1x1':
    raise errors.ConfigError(
        f"adapter {pair[0]}:{pair[1]}: student {s} vs teacher {t}: a 1×1 conv only changes channels; "
        "pick layers of the same spatial size or use the 'conv_bn_relu' adapter (RepDistiller's "
        'ConvReg, which also resamples ×2, ×½ or to a smaller size).')
  hs, ht = s[0], t[0]
  if not (hs == 2 * ht or 2 * hs == ht or hs >= ht):
    raise errors.ConfigError(
        f"adapter {pair[0]}:{pair[1]}: student {s} vs teacher {t}: the 'conv_bn_relu' adapter maps a "
        'student map 2× the teacher\'s, ½ of it or larger; pick other layers.')


@dataclasses.dataclass(frozen=True, eq=False)
class Adapters:
  """The `adapted/<s>:<t>` extra."""
  pairs: tuple[tuple[str, str], ...]
  out_shapes: tuple[Shape, ...]
  kind: str = 'conv1x1'
  name: str = 'adapters'

  @property
  def module(self) -> _Adapters:
    return _Adapters(self.pairs, self.out_shapes, self.kind)

  def init(self, rng: Array, s_feats: Mapping[str, Array], t_feats: Mapping[str, Array]
           ) -> tuple[PyTree, PyTree]:
    del t_feats
    variables = dict(self.module.init(rng, s_feats, False))
    return variables.pop('params'), variables

  def apply(self, params: PyTree, state: PyTree, s_feats: Mapping[str, Array],
            t_feats: Mapping[str, Array], *, train: bool, **_: Any) -> tuple[dict[str, Array], PyTree]:
    out, new_state = self.module.apply({'params': params, **state}, s_feats, train,
                                       mutable=list(state))
    return out, dict(new_state)


@dataclasses.dataclass(frozen=True, eq=False)
class VID:
  """The `vid_mean/<s>:<t>` and `vid_log_variance/<s>:<t>` extra (Ahn et al. 2019)."""
  pairs: tuple[tuple[str, str], ...]
  out_shapes: tuple[Shape, ...]
  name: str = 'vid'

  def init(self, rng: Array, s_feats: Mapping[str, Array], t_feats: Mapping[str, Array]
           ) -> tuple[PyTree, PyTree]:
    del t_feats
    return _VID(self.pairs, self.out_shapes).init(rng, s_feats)['params'], {}

  def apply(self, params: PyTree, state: PyTree, s_feats: Mapping[str, Array],
            t_feats: Mapping[str, Array], **_: Any) -> tuple[dict[str, Array], PyTree]:
    return _VID(self.pairs, self.out_shapes).apply({'params': params}, s_feats), state
