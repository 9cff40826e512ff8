"""Training stages: consecutive step ranges, each with its own loss mix and optimizer.

`config.stages` is a list of `{'steps': int, 'losses': [...], 'optimizer': {...}}`; `optimizer`
holds only the fields that differ from `config.optimizer` and its schedule runs over the stage's own
steps. E.g. FitNets (Romero et al. 2015): a hint stage that trains the student's lower layers and the
regressor on `fitnet`, then a KD stage. An empty list is one stage of `config.losses` and
`config.optimizer` over `config.total_steps`.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import ml_collections
import optax

from kd_jax import config_utils, errors, losses, optim
from kd_jax.losses.compose import Composite

_STAGE_KEYS = ('steps', 'losses', 'optimizer')


@dataclasses.dataclass(frozen=True)
class Stage:
  steps: int
  end: int  # last step of the stage (1-based, inclusive)
  composite: Composite
  optimizer: ml_collections.ConfigDict


def _as_dict(raw: Any, where: str) -> dict[str, Any]:
  value = config_utils.to_dict(raw)
  if not isinstance(value, dict):
    raise errors.ConfigError(f"{where}={raw!r} must be a mapping with keys {', '.join(_STAGE_KEYS)}.")
  return value


def build(config: ml_collections.ConfigDict, run_values: dict[str, Any] | None = None
          ) -> list[Stage]:
  """The run's stages; ConfigError for unknown keys, bad step counts or a sum != total_steps.

  `run_values`: hyperparameters only the run knows (see `losses.compose`).
  """
  total = int(config.total_steps)
  raw_stages = list(config.get('stages') or [])
  if not raw_stages:
    return [Stage(total, total, losses.compose(config.losses, run_values=run_values),
                  config.optimizer)]
  out, end = [], 0
  for i, raw in enumerate(raw_stages):
    where = f'config.stages[{i}]'
    spec = _as_dict(raw, where)
    unknown = sorted(set(spec) - set(_STAGE_KEYS))
    if unknown or 'steps' not in spec or 'losses' not in spec:
      raise errors.ConfigError(
          f"{where} has keys {sorted(spec)}; a stage needs 'steps' and 'losses' and may set "
          "'optimizer' (the fields that differ from config.optimizer).")
    steps = spec['steps']
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
      raise errors.ConfigError(f'{where}.steps={steps!r} must be a positive integer.')
    opt = ml_collections.ConfigDict(config.optimizer.to_dict())
    overrides = _as_dict(spec.get('optimizer') or {}, f'{where}.optimizer')
    bad = sorted(set(overrides) - set(opt))
    if bad:
      raise errors.ConfigError(f"{where}.optimizer has unknown field(s) {', '.join(bad)}; valid: "
                               f"{', '.join(sorted(opt))}.")
    opt.update(overrides)
    end += steps
    out.append(Stage(steps, end, losses.compose(spec['losses'], field=f'{where}.losses',
                                                run_values=run_values), opt))
  if end != total:
    raise errors.ConfigError(
        f'config.stages run {end} steps in all but config.total_steps={total}; set '
        f'config.total_steps={end} or change the stages\' steps.')
  return out


def make_tx(stage_list: list[Stage]) -> optax.GradientTransformation | optim.Stages:
  """One optimizer (a single stage) or `optim.Stages` with each stage's schedule over its steps."""
  fields = (['config.optimizer'] if len(stage_list) == 1
            else [f'config.stages[{i}].optimizer' for i in range(len(stage_list))])
  txs = tuple(optim.make_optimizer(s.optimizer, s.steps, f) for s, f in zip(stage_list, fields))
  return txs[0] if len(txs) == 1 else optim.Stages(txs)


def required_keys(stage_list: list[Stage]) -> frozenset[str]:
  """Every outputs-dict key any stage reads."""
  return frozenset().union(*(s.composite.required_keys for s in stage_list))
