"""Classifier training: supervised teachers, scratch students and distilled students, one trainer.

With `config.teacher.checkpoint` empty this trains on labels alone (a teacher or a scratch student);
with it set, the restored teacher is frozen and its outputs feed the configured loss terms.

The train step is `(state, teacher, batch, rng) -> (state, metrics)`: pure, jitted by the shared loop
with the state donated, batch sharded over the mesh's `data` axis, everything else replicated.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax

from kd_jax import config_utils, data, optim, parallel
from kd_jax.data import augment
from kd_jax.metrics import classification as cls_metrics
from kd_jax.metrics import cost
from kd_jax.models import features as features_lib
from kd_jax.train_state import TrainState, step_key
from kd_jax.trainers import common, feature_plan, loop
from kd_jax.trainers.feature_plan import ADAPTED, STUDENT, TEACHER, Adapters, first
from kd_jax.types import Array, Batch, PyTree

def default_config() -> ml_collections.ConfigDict:
  """Every field a classification config may set (configs start from this)."""
  c = ml_collections.ConfigDict()
  c.trainer = 'classification'
  c.seed = 0
  c.data = ml_collections.ConfigDict(dict(
      name='fashion_mnist', data_dir='', batch_size=128, eval_batch_size=1000,
      cache_in_memory=True, augment=True, crop_padding=2, flip=True, train_split='train',
      eval_split='test'))
  c.model = {'name': 'small_cnn', 'num_classes': 10}
  c.teacher = ml_collections.ConfigDict(dict(checkpoint='', model={}))
  c.losses = [('ce', 1.0, {})]
  c.optimizer = optim.default_optimizer_config()
  c.total_steps = 1000
  c.log_every = 100
  c.eval_every = 0
  c.checkpoint_every = 500
  c.keep_checkpoints = 2
  return c


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains a classifier (optionally distilling a frozen teacher) and evaluates it; see module doc."""
  run = common.prepare(config, default_config(), workdir, with_eval=True)
  mesh, train_src, eval_src, image_shape = (run.mesh, run.train_source, run.eval_source,
                                            run.image_shape)
  example = jnp.zeros((1, *image_shape), jnp.float32)

  student, composite, plan, teacher = common.student_losses_teacher(config, role='model',
                                                                    example=example)
  s_paths, t_paths, adapted = plan.student_paths, plan.teacher_paths, plan.adapted

  # Validate feature paths (clear error for a bad one) and size the adapters once, outside jit.
  s_shapes = common.feature_shapes(student, jax.eval_shape(
      lambda: student.init(jax.random.key(0), example, train=False)), example, s_paths)
  t_shapes = (common.feature_shapes(teacher.module, teacher.variables, example, t_paths)
              if teacher else {})
  adapters = Adapters(feature_plan.check_adaptable(plan, s_shapes, t_shapes))

  tx = optim.make_optimizer(config.optimizer, config.total_steps)

  def init(rng: Array) -> TrainState:
    variables = student.init(rng, example, train=False)
    params = {'student': variables['params'], 'extras': {}}
    if adapted:
      s_feats = features_lib.apply_with_features(student, variables, example, s_paths, train=False)[1]
      dummy = {f'{s}:{t}': first(s_feats[s]) for s, t in adapted}
      params['extras'] = adapters.init(jax.random.fold_in(rng, 1), dummy)['params']
    model_state = {k: v for k, v in variables.items() if k != 'params'}
    return TrainState.create(params=params, model_state=model_state, tx=tx)

  def teacher_outputs(t_vars: PyTree, images: Array) -> dict[str, Array]:
    if teacher is None:
      return {}
    logits, feats, _ = features_lib.apply_with_features(teacher.module, t_vars, images, t_paths,
                                                        train=False)
    out = {'teacher_logits': logits, **{TEACHER + p: first(f) for p, f in feats.items()}}
    # The teacher is frozen: nothing flows back into it.
    return jax.lax.stop_gradient(out)

  def step(state: TrainState, t_vars: PyTree, batch: Batch, rng: Array):
    images = batch['image']
    if config.data.augment:
      # Crop before normalising so the padding is black, as in the usual recipe.
      images = augment.random_crop_flip(step_key(rng, state.step, 'augment'), images,
                                        pad=config.data.crop_padding, flip=config.data.flip)
    images = augment.normalize(images)
    t_out = teacher_outputs(t_vars, images)

    def loss_fn(params):
      variables = {'params': params['student'], **state.model_state}
      logits, feats, new_state = features_lib.apply_with_features(
          student, variables, images, s_paths, train=True, mutable=list(state.model_state),
          rngs={'dropout': step_key(rng, state.step, 'dropout')})
      outputs = {'student_logits': logits, 'labels': batch['label'], **t_out,
                 **{STUDENT + p: first(f) for p, f in feats.items()}}
      if adapted:
        mapped = adapters.apply({'params': params['extras']},
                                {f'{s}:{t}': first(feats[s]) for s, t in adapted})
        outputs.update({ADAPTED + k: v for k, v in mapped.items()})
      total, terms = composite(outputs, state.step)
      return total, (terms, new_state, logits)

    (total, (terms, new_state, logits)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params)
    new = state.apply_gradients(grads, dict(new_state))
    metrics = {'loss': total, **terms, 'grad_norm': optax.tree.norm(grads),
               'accuracy': jnp.mean(cls_metrics.top1_correct(logits, batch['label']))}
    if 'teacher_logits' in t_out:
      metrics['agreement'] = jnp.mean(cls_metrics.agreement(logits, t_out['teacher_logits']))
    return new, metrics

  @jax.jit
  def eval_step(state: TrainState, t_vars: PyTree, batch: Batch) -> dict[str, Array]:
    images = augment.normalize(batch['image'])
    mask = batch['mask']
    logits = student.apply({'params': state.params['student'], **state.model_state}, images,
                           train=False)
    out = {'student_correct': jnp.sum(cls_metrics.top1_correct(logits, batch['label']) * mask),
           'count': jnp.sum(mask)}
    if teacher is not None:
      t_logits = teacher.module.apply(t_vars, images, train=False)
      out['teacher_correct'] = jnp.sum(cls_metrics.top1_correct(t_logits, batch['label']) * mask)
      out['agreement'] = jnp.sum(cls_metrics.agreement(logits, t_logits) * mask)
    return out

  t_vars_global = parallel.replicate(teacher.variables, mesh) if teacher is not None else {}

  def evaluate(state: TrainState, step_: int, writer: Any) -> dict[str, float]:
    del writer, step_
    sums: dict[str, Array] | None = None
    for local in data.eval_batches(eval_src, global_batch_size=config.data.eval_batch_size,
                                   process_index=jax.process_index(),
                                   process_count=jax.process_count()):
      out = eval_step(state, t_vars_global, parallel.to_global(local, mesh))
      sums = out if sums is None else jax.tree.map(jnp.add, sums, out)
    host = parallel.fetch(sums)
    n = float(host['count'])
    result = {'eval/student_top1': float(host['student_correct']) / n}
    if teacher is not None:
      result['eval/teacher_top1'] = float(host['teacher_correct']) / n
      result['eval/agreement'] = float(host['agreement']) / n
    return result

  def finalize(state: TrainState, writer: Any) -> dict[str, Any]:
    s_vars = {'params': state.params['student'], **state.model_state}
    fwd = lambda v, x: student.apply(v, x, train=False)
    out = {'student': {'model': config_utils.to_dict(config.model),
                       'params': cost.param_count(state.params['student']),
                       'flops_per_example': cost.flops(fwd, s_vars, example)},
           'extras_params': cost.param_count(state.params['extras'])}
    if teacher is not None:
      t_fwd = lambda v, x: teacher.module.apply(v, x, train=False)
      out['teacher'] = {'model': teacher.model_config,
                        'checkpoint': config.teacher.checkpoint,
                        'params': cost.param_count(teacher.variables['params']),
                        'flops_per_example': cost.flops(t_fwd, teacher.variables, example)}
    writer.write_texts(int(config.total_steps), {'cost': str(out)})
    return out

  def export(state: TrainState) -> PyTree:
    # Only the student: extras (adapters) and the teacher never leave the run.
    return {'model': {'params': state.params['student'], **state.model_state}}

  train_iter = common.train_batches(config, train_src)
  task = loop.Task(
      init=init, step=step, teacher=t_vars_global, train_batches=train_iter, evaluate=evaluate,
      export=export, finalize=finalize,
      meta={'trainer': 'classification', 'dataset': config.data.name,
            'exported': {'model': config_utils.to_dict(config.model)}})
  return loop.run(task, config, workdir, mesh)
