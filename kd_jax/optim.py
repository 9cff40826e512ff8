"""Optimizers and learning-rate schedules from a config (shared by every trainer)."""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import ml_collections
import optax

from kd_jax import config_utils, errors

_OPTIMIZERS = ('sgd', 'adam', 'adamw')
_SCHEDULES = ('constant', 'cosine', 'linear')


def learning_rate(cfg: ml_collections.ConfigDict, total_steps: int) -> optax.Schedule:
  """Warm-up (linear from 0) followed by the named decay over the remaining steps."""
  lr, warmup = float(cfg.learning_rate), int(cfg.get('warmup_steps', 0))
  name = cfg.get('schedule', 'constant')
  decay_steps = max(1, total_steps - warmup)
  if name == 'constant':
    decay = optax.constant_schedule(lr)
  elif name == 'cosine':
    decay = optax.cosine_decay_schedule(lr, decay_steps)
  elif name == 'linear':
    decay = optax.linear_schedule(lr, 0.0, decay_steps)
  else:
    raise errors.ConfigError(f"unknown schedule {name!r}; use one of "
                             f"{', '.join(_SCHEDULES)}.")
  if warmup <= 0:
    return decay
  return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), decay], [warmup])


def make_optimizer(cfg: ml_collections.ConfigDict, total_steps: int,
                   field: str = 'config.optimizer') -> optax.GradientTransformation:
  """An optimizer config (`field` names it in errors) → optax transformation (optional clipping)."""
  lr = cfg.get('learning_rate')
  # A negative rate ascends the loss and NaN poisons step 1: both would "train" without a word.
  if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
    raise errors.ConfigError(f'{field}.learning_rate={lr!r} must be a finite number > 0.')
  config_utils.check_count(cfg.get('warmup_steps', 0), f'{field}.warmup_steps', low=0,
                           meaning='steps of linear warm-up from 0')
  with config_utils.field_context(field):
    return _make_optimizer(cfg, total_steps)


def _make_optimizer(cfg: ml_collections.ConfigDict, total_steps: int
                    ) -> optax.GradientTransformation:
  name = cfg.get('name', 'adam')
  sched = learning_rate(cfg, total_steps)
  wd = float(cfg.get('weight_decay', 0.0))
  if name == 'sgd':
    tx = optax.sgd(sched, momentum=cfg.get('momentum', 0.9) or None, nesterov=cfg.get('nesterov', True))
    if wd:
      tx = optax.chain(optax.add_decayed_weights(wd), tx)
  elif name == 'adam':
    tx = optax.adam(sched, b1=cfg.get('b1', 0.9), b2=cfg.get('b2', 0.999))
    if wd:
      tx = optax.chain(optax.add_decayed_weights(wd), tx)
  elif name == 'adamw':
    tx = optax.adamw(sched, b1=cfg.get('b1', 0.9), b2=cfg.get('b2', 0.999), weight_decay=wd)
  else:
    raise errors.ConfigError(f"unknown optimizer {name!r}; use one of "
                             f"{', '.join(_OPTIMIZERS)}.")
  clip = cfg.get('grad_clip_norm', 0.0)
  return optax.chain(optax.clip_by_global_norm(clip), tx) if clip else tx


def default_optimizer_config() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(
      name='adam', learning_rate=1e-3, schedule='cosine', warmup_steps=0, weight_decay=0.0,
      momentum=0.9, nesterov=True, b1=0.9, b2=0.999, grad_clip_norm=0.0))


@dataclasses.dataclass(frozen=True)
class Stages:
  """One optax transformation per training stage (e.g. FitNets' hint stage, then KD).

  The optimizer state is a tuple with each stage's own state, so a stage's schedule counts from the
  stage's first step and its moments start fresh; `update(stage, ...)` touches only that slot.
  `stage` is a Python int: each stage has its own compiled train step.
  """
  txs: tuple[optax.GradientTransformation, ...]

  def init(self, params: Any) -> tuple[optax.OptState, ...]:
    return tuple(tx.init(params) for tx in self.txs)

  def update(self, stage: int, grads: Any, state: tuple[optax.OptState, ...], params: Any
             ) -> tuple[Any, tuple[optax.OptState, ...]]:
    updates, new = self.txs[stage].update(grads, state[stage], params)
    return updates, state[:stage] + (new,) + state[stage + 1:]
