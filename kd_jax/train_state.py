"""The student's training state: trained params (student + extras), model state, optimizer, rng.

Two of the three pytrees of a distillation run live here: `params['student']` (trained, exported) and
`params['extras']` (adapters/projectors, trained and checkpointed, never exported); `extras_state`
holds the extras' non-trained state (e.g. CRD's memory bank), checkpointed, never exported. The
teacher is the third pytree and is never part of this state.
"""
from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax

from kd_jax import optim
from kd_jax.types import Array, PyTree


@flax.struct.dataclass
class TrainState:
  """State of one optimised role.

  There is no rng field: the run's root key comes from `config.seed` and is folded with `step` inside
  the step, so restoring `step` restores the random stream exactly.
  """
  step: Array
  params: PyTree
  model_state: PyTree
  opt_state: optax.OptState
  tx: optax.GradientTransformation | optim.Stages = flax.struct.field(pytree_node=False)
  extras_state: PyTree = flax.struct.field(default_factory=dict)

  @classmethod
  def create(cls, *, params: PyTree, model_state: PyTree,
             tx: optax.GradientTransformation | optim.Stages,
             extras_state: PyTree | None = None) -> 'TrainState':
    return cls(step=jnp.zeros((), jnp.int32), params=params, model_state=model_state,
               opt_state=tx.init(params), tx=tx, extras_state=extras_state or {})

  def apply_gradients(self, grads: PyTree, model_state: PyTree, *, stage: int = 0,
                      extras_state: PyTree | None = None) -> 'TrainState':
    """One optimizer step; with `optim.Stages`, the transformation (and state slot) of `stage`."""
    if isinstance(self.tx, optim.Stages):
      updates, opt_state = self.tx.update(stage, grads, self.opt_state, self.params)
    else:
      updates, opt_state = self.tx.update(grads, self.opt_state, self.params)
    return self.replace(step=self.step + 1, params=optax.apply_updates(self.params, updates),
                        opt_state=opt_state, model_state=model_state,
                        extras_state=self.extras_state if extras_state is None else extras_state)


def step_key(root: Array, step: Array, role: str) -> Array:
  """Per-step, per-role key: fold the step, then the role, so roles never share randomness."""
  roles = {'augment': 0, 'dropout': 1, 'latent': 2, 'noise': 3, 'corrupt': 4, 'misc': 5,
           'mixup': 6, 'contrast': 7}
  return jax.random.fold_in(jax.random.fold_in(root, step), roles[role])


def global_norm(tree: Any) -> Array:
  return optax.global_norm(tree)
