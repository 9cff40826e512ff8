"""The training state of one optimised role: step, params, non-trained model state, optimizer.

In a distillation run `params` and `model_state` are each `{'student': ..., 'extras': {...}}` (see
`kd_jax.distill.core`): the student is trained and exported, the extras (adapters, VID, CRD heads
and memory) are trained or updated and checkpointed, never exported. The teacher is the third pytree
and is never part of this state.
"""
from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp
import optax

from kd_jax import optim
from kd_jax.types import Array, PyTree

_ROLES = {'augment': 0, 'dropout': 1, 'latent': 2, 'noise': 3, 'corrupt': 4, 'misc': 5,
          'mixup': 6, 'contrast': 7}


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

  @classmethod
  def create(cls, *, params: PyTree, model_state: PyTree,
             tx: optax.GradientTransformation | optim.Stages) -> 'TrainState':
    return cls(step=jnp.zeros((), jnp.int32), params=params, model_state=model_state,
               opt_state=tx.init(params), tx=tx)

  def apply_gradients(self, grads: PyTree, model_state: PyTree, *, stage: int = 0) -> 'TrainState':
    """One optimizer step; with `optim.Stages`, the transformation (and state slot) of `stage`."""
    if isinstance(self.tx, optim.Stages):
      updates, opt_state = self.tx.update(stage, grads, self.opt_state, self.params)
    else:
      updates, opt_state = self.tx.update(grads, self.opt_state, self.params)
    return self.replace(step=self.step + 1, params=optax.apply_updates(self.params, updates),
                        opt_state=opt_state, model_state=model_state)


def step_key(root: Array, step: Array, role: str) -> Array:
  """Per-step, per-role key: fold the step, then the role, so roles never share randomness."""
  return jax.random.fold_in(jax.random.fold_in(root, step), _ROLES[role])
