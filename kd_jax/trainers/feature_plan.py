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
"""
from __future__ import annotations

import dataclasses
from typing import Any, Iterable, Mapping

import flax.linen as nn

from kd_jax import errors
from kd_jax.types import Array

STUDENT = 'student_features/'
TEACHER = 'teacher_features/'
ADAPTED = 'adapted/'


@dataclasses.dataclass(frozen=True)
class FeaturePlan:
  student_paths: tuple[str, ...]
  teacher_paths: tuple[str, ...]
  adapted: tuple[tuple[str, str], ...]

  @classmethod
  def from_keys(cls, keys: Iterable[str]) -> 'FeaturePlan':
    s_paths, t_paths, adapted = set(), set(), set()
    for key in keys:
      if key.startswith(STUDENT):
        s_paths.add(key[len(STUDENT):])
      elif key.startswith(TEACHER):
        t_paths.add(key[len(TEACHER):])
      elif key.startswith(ADAPTED):
        s, _, t = key[len(ADAPTED):].partition(':')
        if not s or not t:
          raise errors.ConfigError(
              f"loss input {key!r} in config.losses must read 'adapted/<student path>:<teacher "
              "path>', e.g. 'adapted/stage2:stage3'.")
        adapted.add((s, t))
        s_paths.add(s)
        t_paths.add(t)
    return cls(tuple(sorted(s_paths)), tuple(sorted(t_paths)), tuple(sorted(adapted)))

  def adapter_keys(self) -> list[str]:
    return [f'{s}:{t}' for s, t in self.adapted]


def first(x: Any) -> Array:
  """capture_intermediates keeps a tuple of outputs per call; the modules here are called once."""
  return x[0] if isinstance(x, (tuple, list)) else x


def check_adaptable(plan: FeaturePlan, s_shapes: Mapping[str, tuple[int, ...]],
                    t_shapes: Mapping[str, tuple[int, ...]]) -> dict[str, int]:
  """Channel count per adapter; a 1×1 conv cannot fix a spatial mismatch, so that is an error."""
  out = {}
  for s, t in plan.adapted:
    ss, ts = s_shapes[s], t_shapes[t]
    if len(ss) != len(ts) or ss[1:-1] != ts[1:-1]:
      raise errors.ConfigError(
          f"adapter 'adapted/{s}:{t}' in config.losses cannot match shapes: student {s} is "
          f'{ss[1:]} and teacher {t} is {ts[1:]} (a 1×1 conv only changes channels); pick layers '
          'with the same spatial size.')
    out[f'{s}:{t}'] = ts[-1]
  return out


class Adapters(nn.Module):
  """1×1 convs from student features to the teacher's channel count, one per adapted pair."""
  out_channels: Mapping[str, int]

  @nn.compact
  def __call__(self, feats: Mapping[str, Array]) -> dict[str, Array]:
    return {k: nn.Conv(self.out_channels[k], (1, 1), name=k.replace('/', '.').replace(':', '-'))(v)
            for k, v in feats.items()}
