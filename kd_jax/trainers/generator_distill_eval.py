"""The generator-distillation run's teacher, evaluation and data-free batches (see generator_distill)."""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from kd_jax import config_utils, errors, parallel
from kd_jax import teacher as teacher_lib
from kd_jax.trainers import common, gan_parts, gen_eval


def student_variables(state: Any) -> Any:
  """The generator that is evaluated and exported: the student's EMA if the run keeps one
  (`config.ema_decay` > 0), else the student itself."""
  if state.ema is not None:
    return state.ema
  return {'params': state.student.params['student'], **state.student.model_state['student']}


def restore_generator_teacher(config: ml_collections.ConfigDict, image_shape: tuple[int, ...]
                              ) -> teacher_lib.Teacher:
  """The frozen teacher G (a GAN run's G_ema): same resolution as the data, same latent size."""
  if not config.teacher.checkpoint:
    raise errors.ConfigError('config.teacher.checkpoint is empty; set it to the --workdir of a GAN '
                             'teacher run (configs/fashion_mnist/gan_teacher.py).')
  common.check_teacher_resolution(config, image_shape, 'generates')
  zdim = gan_parts.latent_dim(config.model, 'config.model')
  num_classes = gan_parts.num_classes(config.model)
  teacher = teacher_lib.restore_teacher(
      config.teacher.checkpoint, config.teacher.model, role='generator',
      init_args=(jnp.zeros((1, zdim)), jnp.zeros((1,), jnp.int32) if num_classes else None),
      init_kwargs={'train': False})
  t_zdim = gan_parts.latent_dim(teacher.model_config, 'config.teacher.model')
  if t_zdim != zdim:
    raise errors.ConfigError(f'config.model.latent_dim={zdim} but the teacher uses {t_zdim}; the '
                             'student must read the same latents: set config.model.latent_dim='
                             f'{t_zdim}.')
  return teacher


class DistillEvaluation:
  """Teacher-vs-student grids on fixed latents at every evaluation; PSNR/SSIM on shared latents,
  FID/KID/PR of both generators and their cost at the end."""

  def __init__(self, config: ml_collections.ConfigDict, workdir: str, run: Any,
               student: nn.Module, teacher: teacher_lib.Teacher, latent_dim: int,
               num_classes: int):
    ev = config.eval
    self._workdir, self._source, self._image_shape = workdir, run.train_source, run.image_shape
    self._student, self._teacher = student, teacher
    self._zdim, self._classes = latent_dim, num_classes
    self._seed, self._pairs, self._batch = int(ev.seed), int(ev.num_pairs), int(ev.batch_size)
    self._num_samples, self._step = int(ev.num_samples), int(config.total_steps)
    self._extractor_args = (ev.feature_fn, ev.classifier_checkpoint, ev.feature_layer,
                           int(ev.feature_crop))
    self._model_config = config_utils.to_dict(config.model)
    self._checkpoint = config.teacher.checkpoint
    self._key = jax.random.key(self._seed)
    self._grid_z = gan_parts.sample_latents(self._key, int(ev.grid_size), latent_dim)
    self._grid_y = (jnp.arange(int(ev.grid_size), dtype=jnp.int32) % num_classes
                    if num_classes else None)
    self._gen_s = jax.jit(lambda v, z, y, k: student.apply(v, z, y, train=False, rngs={'noise': k}))
    self._gen_t = jax.jit(lambda v, z, y, k: teacher.module.apply(v, z, y, train=False,
                                                                 rngs={'noise': k}))
    self._t_host = jax.device_get(teacher.variables)
    self._grid_t = np.asarray(self._gen_t(self._t_host, self._grid_z, self._grid_y, self._key))

  def _student_vars(self, state: Any) -> Any:
    return parallel.fetch(student_variables(state))

  def evaluate(self, state: Any, step: int, writer: Any) -> dict[str, float]:
    grid_s = np.asarray(self._gen_s(self._student_vars(state), self._grid_z, self._grid_y,
                                    self._key))
    gen_eval.write_grid(self._workdir, 'teacher_vs_student', step, gen_eval.interleave_rows(
        [('teacher', self._grid_t), ('student', grid_s)], 16), writer)
    return {f'eval/{k}': v for k, v in gen_eval.pair_report(grid_s, self._grid_t,
                                                             'vs_teacher_').items()}

  def finalize(self, state: Any, writer: Any) -> dict[str, Any]:
    s_vars, key = self._student_vars(state), jax.random.key(self._seed + 7)
    sample_s = lambda z, y: self._gen_s(s_vars, z, y, key)
    sample_t = lambda z, y: self._gen_t(self._t_host, z, y, key)
    z, y = gen_eval.latents(self._seed + 7, self._pairs, self._zdim, self._classes)
    s_imgs = gen_eval.sample_images(sample_s, z, y, self._batch)
    t_imgs = gen_eval.sample_images(sample_t, z, y, self._batch)
    pairs = {**gen_eval.pair_report(s_imgs, t_imgs, 'vs_teacher_'), 'num_pairs': self._pairs}
    z0 = jnp.zeros((1, self._zdim), jnp.float32)
    cost = lambda m, v: gen_eval.cost_report(lambda vv, zz: m.apply(vv, zz, None, train=False),
                                             v, z0)
    out: dict[str, Any] = {
        'student_vs_teacher_same_latents': pairs,
        'student': {'model': self._model_config, **cost(self._student, s_vars)},
        'teacher': {'model': self._teacher.model_config, 'checkpoint': self._checkpoint,
                    **cost(self._teacher.module, self._t_host)},
        'extras_params': int(gen_eval.cost.param_count(state.student.params['extras']))}
    out['params_ratio'] = out['student']['params'] / out['teacher']['params']
    out['flops_ratio'] = out['student']['flops_per_example'] / out['teacher']['flops_per_example']
    scalars = {'final/psnr_vs_teacher': pairs['vs_teacher_psnr'],
               'final/ssim_vs_teacher': pairs['vs_teacher_ssim']}
    extractor = gen_eval.feature_extractor(*self._extractor_args, self._image_shape)
    if extractor is not None:
      quality = lambda fn: gen_eval.generator_quality(
          fn, extractor, self._source, num_samples=self._num_samples, batch=self._batch,
          seed=self._seed, latent_dim=self._zdim, num_classes=self._classes)
      out['quality_student'], out['quality_teacher'] = quality(sample_s), quality(sample_t)
      out['fid_ratio_student_over_teacher'] = (out['quality_student']['fid']
                                               / max(out['quality_teacher']['fid'], 1e-9))
      scalars.update({'final/fid_student': out['quality_student']['fid'],
                      'final/fid_teacher': out['quality_teacher']['fid']})
    writer.write_scalars(self._step, scalars)
    gen_eval.write_grid(self._workdir, 'final_teacher_vs_student', self._step,
                        gen_eval.interleave_rows([('teacher', t_imgs[:64]),
                                                  ('student', s_imgs[:64])], 16), writer)
    return out


class LatentOnlyBatches:
  """Data-free mode: the step samples its own latents; batches only carry the batch size.

  A zero-filled uint8 image placeholder keeps one batch structure for both modes (it is never
  read in data-free mode); the state is just a counter so resuming works like a real iterator.
  """

  def __init__(self, local_batch: int, image_shape: tuple[int, ...]):
    self._batch = {'image': np.zeros((local_batch, *image_shape), np.uint8),
                   'label': np.zeros((local_batch,), np.int32)}
    self._count = 0

  def __iter__(self):
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    self._count += 1
    return self._batch

  def get_state(self) -> dict[str, int]:
    return {'count': self._count}

  def set_state(self, state: dict[str, int]) -> None:
    self._count = int(state.get('count', 0))
