"""The student's training state: trained params (student + extras), model state, optimizer, rng.

Two of the three pytrees of a distillation run live here: `params['student']` (trained, exported) and
`params['extras']` (adapters/projectors, trained and checkpointed, never exported). The teacher is the
third and is never part of this state.
"""
from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax

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
  tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)

  @classmethod
  def create(cls, *, params: PyTree, model_state: PyTree, tx: optax.GradientTransformation ) -> 'TrainState':
    return cls(step=jnp.zeros((), jnp.int32), params=params, model_state=model_state,
               opt_state=tx.init(params), tx=tx)

  def apply_gradients(self, grads: PyTree, model_state: PyTree) -> 'TrainState':
    updates, opt_state = self.tx.update(grads, self.opt_state, self.params)
    return self.replace(step=self.step + 1, params=optax.apply_updates(self.params, updates),
                        opt_state=opt_state, model_state=model_state)


def step_key(root: Array, step: Array, role: str) -> Array:
  """Per-step, per-role key: fold the step, then the role, so roles never share randomness."""
  roles = {'augment': 0, 'dropout': 1, 'latent': 2, 'noise': 3, 'corrupt': 4, 'misc': 5}
  return jax.random.fold_in(jax.random.fold_in(root, step), roles[role])


def global_norm(tree: Any) -> Array:
  return optax.global_norm(tree)
