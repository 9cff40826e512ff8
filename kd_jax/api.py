"""A config-free Python API for notebooks: distil a classifier from a Flax teacher in a few lines.

    import kd_jax, optax
    student_vars, history = kd_jax.api.distill_classifier(
        student=MyStudent(num_classes=10), teacher=my_teacher, teacher_variables=t_vars,
        data={'image': images_uint8_nhwc, 'label': labels},
        losses=[('kd', 0.9, {'temperature': 4.0}), ('ce', 0.1)], steps=500, batch_size=128,
        optimizer=optax.adam(1e-3))
    logits = MyStudent(num_classes=10).apply(student_vars, x, train=False)

It runs the same `classification.train_step` (jitted over all devices, batch sharded, teacher frozen
and replicated) as `launch.py`, without a workdir: no checkpoints, events or summaries. For those,
write a config (README "Running a config").
"""
from __future__ import annotations

import functools
from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from kd_jax import data as data_lib
from kd_jax import losses as losses_lib
from kd_jax import parallel
from kd_jax.distill import core
from kd_jax.train_state import TrainState
from kd_jax.trainers import classification
from kd_jax.types import PyTree


def distill_classifier(student: nn.Module, teacher: nn.Module, teacher_variables: PyTree,
                       data: Mapping[str, np.ndarray] | Any, *, losses: Sequence[Any],
                       steps: int, batch_size: int = 128,
                       optimizer: optax.GradientTransformation | None = None, seed: int = 0,
                       augment: bool = False, log_every: int = 100
                       ) -> tuple[PyTree, list[dict[str, float]]]:
  """Trains `student` on `losses` against the frozen `teacher` for `steps` steps.

  Args:
    student, teacher: Flax modules called as `module(images, train=...)` → logits.
    teacher_variables: the teacher's variables ({'params': ..., 'batch_stats': ...}); never changed.
    data: `{'image': uint8 [N, H, W, C], 'label': int [N]}` arrays, or any random-access source of
      such records (e.g. `kd_jax.data.get_source('fashion_mnist', 'train')`).
    losses: loss terms as in a config's `losses` (names, import paths, weights, kwargs, layers).
    steps, batch_size: the schedule (batch_size must be a multiple of the device count).
    optimizer: an optax transformation (default Adam 1e-3).
    augment: 2-px random crop + horizontal flip, as the configs.

  Returns:
    (the student's variables, the metrics averaged over every `log_every` steps).
  """
  source = data_lib.InMemorySource(dict(data)) if isinstance(data, Mapping) else data
  mesh = parallel.make_mesh()
  parallel.check_global_batch(batch_size, mesh)
  example = jnp.zeros((1, *np.asarray(source[0]['image']).shape), jnp.float32)
  composite = losses_lib.compose(losses, field='losses', run_values={'num_data': len(source)})
  frozen = core.Frozen(teacher, teacher_variables)
  distiller = core.build(student, [frozen], composite.required_keys, output='logits',
                         example=example)
  spec = classification.Spec(distiller, (composite,), augment=augment)
  root = jax.random.key(seed)
  params, model_state = distiller.init(root, example)
  state = parallel.replicate(TrainState.create(params=params, model_state=model_state,
                                               tx=optimizer or optax.adam(1e-3)), mesh)
  tree = parallel.replicate(distiller.teacher_tree([frozen]), mesh)
  step = jax.jit(functools.partial(classification.train_step, spec=spec), donate_argnums=(0,))
  batches = data_lib.train_iterator(source, global_batch_size=batch_size, seed=seed,
                                    process_index=jax.process_index(),
                                    process_count=jax.process_count())
  history, pending = [], []
  for i in range(1, steps + 1):
    state, metrics = step(state, tree, parallel.to_global(next(batches), mesh), root)
    pending.append(metrics)
    if i % log_every == 0 or i == steps:
      host = parallel.fetch(pending)
      history.append({'step': i, **{k: float(np.mean([m[k] for m in host])) for k in host[0]}})
      pending = []
  return parallel.fetch({'params': state.params['student'], **state.model_state['student']}), history
