"""Autoencoders, restoration (denoising, inpainting) and paired image-to-image tasks (edge maps, a
fixed stylisation): wide teacher → narrow student.

Without a teacher this trains the teacher (toward the target: the clean input, or its fixed transform
`config.target.kind`, `kd_jax.data.paired`). With
`config.teacher.checkpoint` the frozen teacher autoencoder sees the same corrupted input and loss
terms read these keys of the outputs dict:

  student_images    the student's output               input_images   the corrupted input
  teacher_images    the teacher's output               target_images  the target: the clean image,
                                                                      or its transform
  student_features/<p>, teacher_features/<p>, adapted/<s>:<t>   e.g. latent matching through adapters

so "reconstruction toward the teacher" is `('l2', w, {})` and "toward the input" is
`{'name': 'l2', 'weight': w, 'inputs': {'teacher_images': 'target_images'}}`.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from kd_jax import checkpoint as ckpt_lib, config_utils, errors, losses, optim, parallel
from kd_jax.data import augment, paired
from kd_jax.distill import core
from kd_jax.losses.compose import Composite
from kd_jax.train_state import TrainState, step_key
from kd_jax.trainers import autoencoder_eval as ae_eval, common, gen_eval, loop
from kd_jax.types import Array, Batch, PyTree

CORRUPTIONS = ('none', 'gaussian', 'mask')
OFFERS = ('student_images', 'teacher_images', 'target_images', 'input_images', 'student_features',
          'teacher_features', 'adapted')


def default_config() -> ml_collections.ConfigDict:
  c = loop.default_config(trainer='autoencoder', eval_every=500)
  c.data = common.data_config(eval_batch_size=1000)
  c.model = {'name': 'conv_autoencoder'}
  c.teacher = common.teacher_config()
  c.corruption = ml_collections.ConfigDict(dict(kind='none', sigma=0.5, mask_size=14))
  # What the models learn to output for the clean image: `paired.KINDS`.
  c.target = ml_collections.ConfigDict(dict(kind='identity'))
  c.losses = [{'name': 'l2', 'weight': 1.0, 'inputs': {'teacher_images': 'target_images'}}]
  c.adapter = 'conv1x1'
  c.optimizer = optim.default_optimizer_config()
  # FID of the outputs vs the targets (end of run) when a feature extractor is set; see
  # `gen_eval.feature_extractor`.
  c.eval = ml_collections.ConfigDict(dict(seed=1234, grid_size=16, classifier_checkpoint='',
                                          feature_layer='features', feature_fn=''))
  return c


@dataclasses.dataclass(frozen=True)
class Corruption:
  """'none', additive Gaussian noise of std `sigma` (denoising), or one random square hole of side
  `mask_size` set to 0 (inpainting)."""
  kind: str = 'none'
  sigma: float = 0.5
  mask_size: int = 14


def corrupt(rng: Array, images: Array, cfg: Corruption) -> Array:
  """The corrupted input the models see (images in [-1, 1])."""
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


@dataclasses.dataclass(frozen=True, eq=False)
class Spec:
  distiller: core.Distiller
  losses: Composite
  corruption: Corruption
  target: str = 'identity'


def train_step(state: TrainState, teacher: PyTree, batch: Batch, rng: Array, *, spec: Spec
               ) -> tuple[TrainState, dict[str, Array]]:
  """One step: corrupt, the frozen teacher's output (if any), the student's update."""
  clean = augment.normalize(batch['image'])
  target = paired.transform(clean, spec.target)
  noisy = corrupt(step_key(rng, state.step, 'corrupt'), clean, spec.corruption)
  t_out = spec.distiller.teacher_outputs(teacher, noisy)

  def loss_fn(params):
    out, model_state = spec.distiller.student_outputs(params, state.model_state, noisy, t_out,
                                                      tree=teacher, train=True)
    out.update(t_out, target_images=target, input_images=noisy)
    total, terms = spec.losses(out, state.step)
    return total, (terms, model_state)

  (total, (terms, model_state)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  return state.apply_gradients(grads, model_state), {'loss': total, **terms}


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains an autoencoder / restoration model, distilling `config.teacher` when given."""
  # Choices are checked before `prepare` creates the workdir: a bad one writes nothing.
  config_utils.check_fields(config, default_config())
  if config.corruption.kind not in CORRUPTIONS:
    raise errors.ConfigError(f'config.corruption.kind={config.corruption.kind!r}; use one of '
                             f'{CORRUPTIONS}.')
  target = config.target.kind
  paired.check_kind(target)
  gen_eval.check_feature_fn(config.eval.feature_fn)
  run = common.prepare(config, default_config(), workdir, with_eval=True)
  if config.teacher.checkpoint:
    check_teacher_target(config.teacher.checkpoint, target)
  x0 = jnp.zeros((1, *run.image_shape), jnp.float32)
  student = config_utils.build_model(config.model, 'config.model')
  teachers = common.restore_teachers(config, role='autoencoder', example=x0)
  composite = losses.compose(config.losses)
  common.check_keys(composite.required_keys, OFFERS, 'autoencoder', len(teachers))
  with config_utils.field_context('config.losses'):
    distiller = core.build(student, teachers, composite.required_keys, output='images',
                           example=x0, adapter=config.adapter)
  spec = Spec(distiller, composite, Corruption(**config_utils.to_dict(config.corruption)), target)
  tx = optim.make_optimizer(config.optimizer, config.total_steps)

  def init(rng: Array) -> TrainState:
    params, model_state = distiller.init(rng, x0)
    return TrainState.create(params=params, model_state=model_state, tx=tx)

  evaluation = ae_eval.Evaluation(workdir, student, teachers[0] if teachers else None,
                                  run.eval_source, functools.partial(corrupt, cfg=spec.corruption),
                                  functools.partial(paired.transform, kind=target),
                                  seed=int(config.eval.seed),
                                  grid_size=int(config.eval.grid_size),
                                  batch=int(config.data.eval_batch_size),
                                  model_config=config_utils.to_dict(config.model),
                                  checkpoint=config.teacher.checkpoint, target_name=target,
                                  extractor_args=(config.eval.feature_fn,
                                                  config.eval.classifier_checkpoint,
                                                  config.eval.feature_layer, 0, run.image_shape))
  task = loop.Task(
      init=init, step=functools.partial(train_step, spec=spec),
      teacher=parallel.place_teacher(distiller.teacher_tree(teachers), run.mesh),
      train_batches=common.train_batches(config, run.train_source),
      evaluate=evaluation.evaluate, export=export, finalize=evaluation.finalize,
      meta={'trainer': 'autoencoder', 'dataset': config.data.name,
            'image_shape': list(run.image_shape),
            'corruption': config_utils.to_dict(config.corruption),
            'target': config_utils.to_dict(config.target),
            'exported': {'autoencoder': config_utils.to_dict(config.model)}})
  return loop.run(task, loop.Settings.from_config(config), workdir, run.mesh)


def check_teacher_target(checkpoint: str, target: str) -> None:
  """ConfigError when the teacher run learnt another target than `target` (a run from before
  `config.target` learnt 'identity'): its outputs would contradict the ground-truth terms."""
  _, _, meta = ckpt_lib.read_meta(checkpoint, 'config.teacher.checkpoint')
  theirs = (meta.get('target') or {}).get('kind', 'identity')
  if theirs != target:
    raise errors.ConfigError(
        f'config.target.kind={target!r}, but the teacher run config.teacher.checkpoint='
        f'{checkpoint!r} learnt target {theirs!r}; set config.target.kind={theirs!r} or use a '
        f'teacher trained for {target!r}.')


def export(state: TrainState) -> PyTree:
  return {'autoencoder': {'params': state.params['student'], **state.model_state['student']}}
