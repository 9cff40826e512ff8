"""Which intermediate features a run needs, and the learned adapters that map them.

Loss terms name their inputs by key in the outputs dict (see `kd_jax.losses.compose`). Three key
families refer to intermediate features, addressed by Flax module path:

  student_features/<path>          the student's output of the module at <path>
  teacher_features/<path>          the frozen teacher's output of the module at <path>
  adapted/<student path>:<teacher path>
                                   the student's features at <student path> through a learned 1×1 conv
                                   to the teacher's channel count at <teacher path> (FitNets-style hint);
                                   the adapter lives in the run's `extras` pytree: trained,
                                   checkpointed, never exported.
  vid_mean/<student path>:<teacher path>
  vid_log_variance/<student path>:<teacher path>
                                   VID's predicted mean (the student's features through the
                                   reference's 1×1 conv-ReLU-conv-ReLU-conv regressor) and its
                                   learned per-channel raw variance; both live in `extras`.
  teacher<i>_features/<path>       with several teachers (`config.teachers`), teacher i's features.

Adapters and VID regressors always target the first teacher (index 0).
"""
from __future__ import annotations

import dataclasses
import re
from typing import Any, Iterable, Mapping

import flax.linen as nn

from kd_jax import errors
from kd_jax.types import Array

STUDENT = 'student_features/'
TEACHER = 'teacher_features/'
ADAPTED = 'adapted/'
VID_MEAN = 'vid_mean/'
VID_LOG_VARIANCE = 'vid_log_variance/'
_INDEXED_TEACHER = re.compile(r'^teacher(\d+)_features/(.+)$')


def _pair(key: str, prefix: str) -> tuple[str, str]:
  s, _, t = key[len(prefix):].partition(':')
  if not s or not t:
    raise errors.ConfigError(
        f"loss input {key!r} in config.losses must read '{prefix}<student path>:<teacher "
        f"path>', e.g. '{prefix}stage2:stage3'.")
  return s, t


@dataclasses.dataclass(frozen=True)
class FeaturePlan:
  student_paths: tuple[str, ...]
  teacher_paths: tuple[str, ...]
  adapted: tuple[tuple[str, str], ...]
  vid: tuple[tuple[str, str], ...] = ()
  # With several teachers: (teacher index, paths) for the `teacher<i>_features/` keys.
  indexed_teacher_paths: tuple[tuple[int, tuple[str, ...]], ...] = ()

  @classmethod
  def from_keys(cls, keys: Iterable[str]) -> 'FeaturePlan':
    s_paths, t_paths, adapted, vid = set(), set(), set(), set()
    indexed: dict[int, set[str]] = {}
    for key in keys:
      indexed_match = _INDEXED_TEACHER.match(key)
      if key.startswith(STUDENT):
        s_paths.add(key[len(STUDENT):])
      elif key.startswith(TEACHER):
        t_paths.add(key[len(TEACHER):])
      elif indexed_match:
        indexed.setdefault(int(indexed_match.group(1)), set()).add(indexed_match.group(2))
      elif key.startswith((ADAPTED, VID_MEAN, VID_LOG_VARIANCE)):
        prefix = next(p for p in (ADAPTED, VID_MEAN, VID_LOG_VARIANCE) if key.startswith(p))
        pair = _pair(key, prefix)
        (adapted if prefix == ADAPTED else vid).add(pair)
        s_paths.add(pair[0])
        t_paths.add(pair[1])
    return cls(tuple(sorted(s_paths)), tuple(sorted(t_paths)), tuple(sorted(adapted)),
               tuple(sorted(vid)), tuple((i, tuple(sorted(p))) for i, p in sorted(indexed.items())))

  def adapter_keys(self) -> list[str]:
    return [f'{s}:{t}' for s, t in self.adapted]


def first(x: Any) -> Array:
  """capture_intermediates keeps a tuple of outputs per call; the modules here are called once."""
  return x[0] if isinstance(x, (tuple, list)) else x


def check_adaptable(plan: FeaturePlan, s_shapes: Mapping[str, tuple[int, ...]],
                    t_shapes: Mapping[str, tuple[int, ...]]) -> dict[str, int]:
  """Channel count per adapter; a 1×1 conv cannot fix a spatial mismatch, so that is an error."""
  out = {}
  for s, t in plan.adapted + plan.vid:
    ss, ts = s_shapes[s], t_shapes[t]
    if len(ss) != len(ts) or ss[1:-1] != ts[1:-1]:
      raise errors.ConfigError(
          f"adapter '{s}:{t}' (adapted/ or vid_) in config.losses cannot match shapes: student {s} is "
          f'{ss[1:]} and teacher {t} is {ts[1:]} (a 1×1 conv only changes channels); pick layers '
          'with the same spatial size.')
    out[f'{s}:{t}'] = ts[-1]
  return out


def module_name(key: str) -> str:
  """A Flax submodule name for a '<student path>:<teacher path>' key ('/' and ':' are not allowed)."""
  return key.replace('/', '.').replace(':', '-')


class Adapters(nn.Module):
  """1×1 convs from student features to the teacher's channel count, one per adapted pair."""
  out_channels: Mapping[str, int]

  @nn.compact
  def __call__(self, feats: Mapping[str, Array]) -> dict[str, Array]:
    return {k: nn.Conv(self.out_channels[k], (1, 1), name=module_name(k))(v)
            for k, v in feats.items()}
