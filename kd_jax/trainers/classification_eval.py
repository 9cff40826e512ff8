"""Evaluation of a classification run: top-1 of student and teachers, agreement, cost summary."""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from kd_jax import data, parallel
from kd_jax.data import augment
from kd_jax.metrics import classification as cls_metrics
from kd_jax.train_state import TrainState
from kd_jax.trainers import common
from kd_jax.types import Array, Batch, PyTree


def abstract_batch(batch_size: int, source: Any) -> dict[str, jax.ShapeDtypeStruct]:
  """The shapes of one training batch (image, label, index) for abstract tracing."""
  image = np.asarray(source[0]['image'])
  return {'image': jax.ShapeDtypeStruct((batch_size, *image.shape), image.dtype),
          'label': jax.ShapeDtypeStruct((batch_size,), jnp.int32),
          'index': jax.ShapeDtypeStruct((batch_size,), jnp.int32)}


class Evaluator:
  """Top-1 over the eval split; the frozen teachers' outputs are computed on the first evaluation
  only and reused (on device) by later ones, so a periodic evaluation costs one student pass."""

  def __init__(self, student: nn.Module, teachers: Sequence[nn.Module], teacher_tree: PyTree,
               source: Any, batch_size: int, mesh: jax.sharding.Mesh):
    self._student, self._teachers, self._tree = student, tuple(teachers), teacher_tree
    self._source, self._batch_size, self._mesh = source, batch_size, mesh
    self._cache: list[tuple[Array, dict[str, Array]]] = []
    self._student_step = jax.jit(self._student_counts)
    self._teacher_step = jax.jit(self._teacher_counts)

  def _teacher_counts(self, tree: PyTree, batch: Batch) -> tuple[Array, dict[str, Array]]:
    images = augment.normalize(batch['image'])
    all_logits, out = [], {}
    for i, (module, variables) in enumerate(zip(self._teachers, tree['teachers'])):
      logits = module.apply(variables, images, train=False)
      all_logits.append(logits)
      out[f'teacher{i}_correct'] = jnp.sum(
          cls_metrics.top1_correct(logits, batch['label']) * batch['mask'])
    return jnp.mean(jnp.stack(all_logits), axis=0), out

  def _student_counts(self, state: TrainState, t_logits: Array | None, batch: Batch
                      ) -> dict[str, Array]:
    images, mask = augment.normalize(batch['image']), batch['mask']
    logits = self._student.apply({'params': state.params['student'],
                                  **state.model_state['student']}, images, train=False)
    out = {'student_correct': jnp.sum(cls_metrics.top1_correct(logits, batch['label']) * mask),
           'count': jnp.sum(mask)}
    if t_logits is not None:
      out['agreement'] = jnp.sum(cls_metrics.agreement(logits, t_logits) * mask)
    return out

  def evaluate(self, state: TrainState, step: int, writer: Any) -> dict[str, float]:
    del step, writer
    sums: dict[str, Array] | None = None
    batches = data.eval_batches(self._source, global_batch_size=self._batch_size,
                                process_index=jax.process_index(),
                                process_count=jax.process_count())
    for i, local in enumerate(batches):
      batch = parallel.to_global(local, self._mesh)
      if self._teachers and i == len(self._cache):
        self._cache.append(self._teacher_step(self._tree, batch))
      t_logits, t_counts = self._cache[i] if self._teachers else (None, {})
      out = {**self._student_step(state, t_logits, batch), **t_counts}
      sums = out if sums is None else jax.tree.map(jnp.add, sums, out)
    host = parallel.fetch(sums)
    n = float(host['count'])
    result = {'eval/student_top1': float(host['student_correct']) / n}
    for i in range(len(self._teachers)):
      # One teacher keeps the plain name `teacher_top1`.
      key = 'eval/teacher_top1' if len(self._teachers) == 1 else f'eval/teacher{i}_top1'
      result[key] = float(host[f'teacher{i}_correct']) / n
    if self._teachers:
      result['eval/agreement'] = float(host['agreement']) / n
    return result


def finalize(state: TrainState, writer: Any, *, step: int, student: nn.Module,
             model_config: dict[str, Any], teachers: Sequence[Any], checkpoints: Sequence[str],
             example: Array) -> dict[str, Any]:
  """Params and FLOPs of the student, its extras and every teacher, for `summary.json`."""
  apply = lambda m: (lambda v, x: m.apply(v, x, train=False))
  s_vars = {'params': state.params['student'], **state.model_state['student']}
  out: dict[str, Any] = {
      'student': common.cost_entry(apply(student), s_vars, example, model=model_config),
      'extras_params': common.cost.param_count(state.params['extras'])}
  described = [common.cost_entry(apply(t.module), t.variables, example, model=t.model_config,
                                 checkpoint=c) for t, c in zip(teachers, checkpoints)]
  if len(described) == 1:
    out['teacher'] = described[0]
  elif described:
    out['teachers'] = described
  writer.write_texts(step, {'cost': str(out)})
  return out
