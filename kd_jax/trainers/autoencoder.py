"""Autoencoders and restoration (denoising, inpainting): wide teacher → narrow student.

Without a teacher this trains the teacher (reconstruction toward the clean input). With
`config.teacher.checkpoint` the frozen teacher autoencoder sees the same corrupted input and loss
terms read these keys of the outputs dict:

  student_images    the student's output               input_images   the corrupted input
  teacher_images    the teacher's output               target_images  the clean image
  student_features/<p>, teacher_features/<p>, adapted/<s>:<t>   e.g. latent matching through adapters

so "reconstruction toward the teacher" is `('l2', w, {})` and "toward the input" is
`{'name': 'l2', 'weight': w, 'inputs': {'teacher_images': 'target_images'}}`.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from kd_jax import config_utils, errors, optim, parallel
from kd_jax.data import augment
from kd_jax.models import features as features_lib
from kd_jax.train_state import TrainState, step_key
from kd_jax.trainers import common, feature_plan, gen_eval, loop
from kd_jax.trainers.feature_plan import ADAPTED, STUDENT, TEACHER, Adapters, first
from kd_jax.types import Array, Batch, PyTree

CORRUPTIONS = ('none', 'gaussian', 'mask')


def default_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.trainer = 'autoencoder'
  c.seed = 0
  c.data = ml_collections.ConfigDict(dict(
      name='fashion_mnist', data_dir='', batch_size=128, eval_batch_size=1000,
      cache_in_memory=True, train_split='train', eval_split='test'))
  c.model = {'name': 'conv_autoencoder'}
  c.teacher = ml_collections.ConfigDict(dict(checkpoint='', model={}))
  c.corruption = ml_collections.ConfigDict(dict(kind='none', sigma=0.5, mask_size=14))
  c.losses = [{'name': 'l2', 'weight': 1.0, 'inputs': {'teacher_images': 'target_images'}}]
  c.optimizer = optim.default_optimizer_config()
  c.eval = ml_collections.ConfigDict(dict(seed=1234, grid_size=16))
  c.total_steps = 1000
  c.log_every = 100
  c.eval_every = 500
  c.checkpoint_every = 500
  c.keep_checkpoints = 2
  return c


def corrupt(rng: Array, images: Array, cfg: ml_collections.ConfigDict) -> Array:
  """Additive Gaussian noise (denoising) or one random square hole set to 0 (inpainting)."""
  if cfg.kind == 'none':
    return images
  if cfg.kind == 'gaussian':
    return jnp.clip(images + cfg.sigma * jax.random.normal(rng, images.shape), -1.0, 1.0)
  b, h, w = images.shape[:3]
  size = min(int(cfg.mask_size), h, w)
  ky, kx = jax.random.split(rng)
  top = jax.random.randint(ky, (b, 1, 1, 1), 0, h - size + 1)
  left = jax.random.randint(kx, (b, 1, 1, 1), 0, w - size + 1)
  rows = jnp.arange(h)[None, :, None, None]
  cols = jnp.arange(w)[None, None, :, None]
  hole = (rows >= top) & (rows < top + size) & (cols >= left) & (cols < left + size)
  return jnp.where(hole, 0.0, images)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains an autoencoder / restoration model, distilling `config.teacher` when given."""
  run = common.prepare(config, default_config(), workdir, with_eval=True)
  mesh, train_src, eval_src, image_shape = (run.mesh, run.train_source, run.eval_source,
                                            run.image_shape)
  if config.corruption.kind not in CORRUPTIONS:
    raise errors.ConfigError(f'config.corruption.kind={config.corruption.kind!r}; use one of '
                             f'{CORRUPTIONS}.')
  x0 = jnp.zeros((1, *image_shape), jnp.float32)
  student, composite, plan, teacher = common.student_losses_teacher(config, role='autoencoder',
                                                                    example=x0)
  s_shapes = common.feature_shapes(student, jax.eval_shape(
      lambda: student.init(jax.random.key(0), x0, train=False)), x0, plan.student_paths)
  t_shapes = (common.feature_shapes(teacher.module, teacher.variables, x0, plan.teacher_paths)
              if teacher else {})
  adapters = Adapters(feature_plan.check_adaptable(plan, s_shapes, t_shapes))
  tx = optim.make_optimizer(config.optimizer, config.total_steps)

  def init(rng: Array) -> TrainState:
    variables = student.init(rng, x0, train=False)
    extras = {}
    if plan.adapted:
      _, feats, _ = features_lib.apply_with_features(student, variables, x0, plan.student_paths,
                                                     train=False)
      extras = adapters.init(jax.random.fold_in(rng, 1),
                             {f'{s}:{t}': first(feats[s]) for s, t in plan.adapted})['params']
    return TrainState.create(params={'student': variables['params'], 'extras': extras},
                             model_state={k: v for k, v in variables.items() if k != 'params'},
                             tx=tx)

  def step(state: TrainState, t_vars: PyTree, batch: Batch, rng: Array):
    clean = augment.normalize(batch['image'])
    noisy = corrupt(step_key(rng, state.step, 'corrupt'), clean, config.corruption)
    t_out: dict[str, Array] = {}
    if teacher is not None:
      imgs, feats, _ = features_lib.apply_with_features(teacher.module, t_vars, noisy,
                                                        plan.teacher_paths, train=False)
      t_out = jax.lax.stop_gradient(
          {'teacher_images': imgs, **{TEACHER + p: first(f) for p, f in feats.items()}})

    def loss_fn(params):
      out, feats, new_ms = features_lib.apply_with_features(
          student, {'params': params['student'], **state.model_state}, noisy, plan.student_paths,
          train=True, mutable=list(state.model_state))
      outputs = {'student_images': out, 'target_images': clean, 'input_images': noisy, **t_out,
                 **{STUDENT + p: first(f) for p, f in feats.items()}}
      if plan.adapted:
        outputs.update({ADAPTED + k: v for k, v in adapters.apply(
            {'params': params['extras']},
            {f'{s}:{t}': first(feats[s]) for s, t in plan.adapted}).items()})
      total, terms = composite(outputs, state.step)
      return total, (terms, new_ms)

    (total, (terms, new_ms)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    return state.apply_gradients(grads, dict(new_ms)), {'loss': total, **terms}

  t_host = jax.device_get(teacher.variables) if teacher else None
  run_s = jax.jit(lambda v, x: student.apply(v, x, train=False))
  run_t = jax.jit(lambda v, x: teacher.module.apply(v, x, train=False)) if teacher else None
  eval_clean = gen_eval.real_images(eval_src, len(eval_src))
  eval_noisy = np.asarray(jax.jit(lambda x: corrupt(jax.random.key(config.eval.seed), x,
                                                    config.corruption))(eval_clean))

  def outputs_on_eval(state: TrainState) -> tuple[np.ndarray, np.ndarray | None]:
    s_vars = parallel.fetch({'params': state.params['student'], **state.model_state})
    bs = int(config.data.eval_batch_size)
    s = gen_eval.batched(lambda x: run_s(s_vars, x), len(eval_noisy), bs,
                         lambda a, k: eval_noisy[a:a + k])
    t = (gen_eval.batched(lambda x: run_t(t_host, x), len(eval_noisy), bs,
                          lambda a, k: eval_noisy[a:a + k]) if teacher else None)
    return s, t

  def evaluate(state: TrainState, step_: int, writer: Any) -> dict[str, float]:
    s, t = outputs_on_eval(state)
    g = int(config.eval.grid_size)
    rows = [('input', eval_clean[:g]), ('corrupted', eval_noisy[:g])]
    rows += [('teacher', t[:g])] if t is not None else []
    rows += [('student', s[:g])]
    gen_eval.write_grid(workdir, 'restoration', step_, rows, writer)
    result = gen_eval.pair_report(s, eval_clean, 'eval/student_vs_clean_')
    result.update(gen_eval.pair_report(eval_noisy, eval_clean, 'eval/corrupted_vs_clean_'))
    if t is not None:
      result.update(gen_eval.pair_report(t, eval_clean, 'eval/teacher_vs_clean_'))
      result.update(gen_eval.pair_report(s, t, 'eval/student_vs_teacher_'))
    return result

  def finalize(state: TrainState, writer: Any) -> dict[str, Any]:
    del writer
    s_vars = parallel.fetch({'params': state.params['student'], **state.model_state})
    out = {'num_eval_images': len(eval_clean),
           'student': {'model': config_utils.to_dict(config.model),
                       **gen_eval.cost_report(gen_eval.module_apply(student), s_vars, x0)},
           'extras_params': int(gen_eval.cost.param_count(state.params['extras']))}
    if teacher is not None:
      out['teacher'] = {'model': teacher.model_config, 'checkpoint': config.teacher.checkpoint,
                        **gen_eval.cost_report(gen_eval.module_apply(teacher.module), t_host, x0)}
      out['params_ratio'] = out['student']['params'] / out['teacher']['params']
      out['flops_ratio'] = out['student']['flops_per_example'] / out['teacher']['flops_per_example']
    return out

  def export(state: TrainState) -> PyTree:
    return {'autoencoder': {'params': state.params['student'], **state.model_state}}

  task = loop.Task(
      init=init, step=step,
      teacher=parallel.replicate(teacher.variables, mesh) if teacher else None,
      train_batches=common.train_batches(config, train_src),
      evaluate=evaluate, export=export, finalize=finalize,
      meta={'trainer': 'autoencoder', 'dataset': config.data.name, 'image_shape': list(image_shape),
            'corruption': config_utils.to_dict(config.corruption),
            'exported': {'autoencoder': config_utils.to_dict(config.model)}})
  return loop.run(task, config, workdir, mesh)
