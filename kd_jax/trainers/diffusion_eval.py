"""The diffusion runs' teacher restore and evaluation (see `kd_jax.trainers.diffusion`).

Every number is taken on fixed initial noise from `config.eval.seed`, so the teacher and every
student are compared image for image: grids put the teacher at its reference sampler above each
student step count; FID/KID/precision/recall (the generators' classifier feature space, 10k
samples) are computed for the student at each of `eval.steps` and for the teacher at
`eval.teacher_steps` (the baseline a step-distilled student must beat: the teacher itself at the
student's step count); cost is params, FLOPs per network evaluation (NFE) and per image
(× NFE), images/s of the whole sampler.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from kd_jax import config_utils, errors, parallel
from kd_jax import teacher as teacher_lib
from kd_jax.diffusion import edm, samplers
from kd_jax.metrics import cost
from kd_jax.trainers import common, gen_eval
from kd_jax.types import Array, PyTree

SAMPLERS = samplers.SAMPLERS + ('consistency',)
# The sampler and steps each mode's student is meant for, when `config.eval` leaves them empty.
MODE_SAMPLING = {'teacher': ('heun', [18]), 'compress': ('heun', [18]),
                 'progressive': ('euler', None), 'consistency': ('consistency', [1, 2]),
                 'dmd': ('consistency', [1])}  # one step: x = G(z) = D(σ_max·z; σ_max)


def default_eval_config() -> ml_collections.ConfigDict:
  """sampler/steps: the student's ('' / []: the mode's, `MODE_SAMPLING`); teacher_steps: step
  counts at which the teacher is scored too, with `teacher_sampler`; reference_*: the teacher
  sampling the grids and PSNR/SSIM compare against; throughput_batch: the batch images/s is timed
  on (a 35-NFE teacher sampler at the FID batch of 500 costs minutes on a CPU, and images/s barely
  depends on the batch past ~100 here)."""
  return ml_collections.ConfigDict(dict(
      num_samples=10000, batch_size=500, classifier_checkpoint='', feature_layer='features',
      feature_crop=0, feature_fn='', grid_size=64, seed=1234, num_pairs=1000,
      sampler='', steps=[], teacher_sampler='euler', teacher_steps=[],
      reference_sampler='heun', reference_steps=18, throughput_batch=100))


def restore_denoiser_teacher(config: ml_collections.ConfigDict, image_shape: tuple[int, ...]
                             ) -> teacher_lib.Teacher:
  """The frozen diffusion teacher (a diffusion run's EMA denoiser) at the data's resolution."""
  common.check_teacher_resolution(config, image_shape, 'denoises')
  x0 = jnp.zeros((1, *image_shape), jnp.float32)
  return teacher_lib.restore_teacher(config.teacher.checkpoint, config.teacher.model,
                                     role='denoiser', init_args=(x0, jnp.ones((1,))),
                                     init_kwargs={'train': False})


def sampling_of(config: ml_collections.ConfigDict) -> tuple[str, list[int]]:
  """(sampler, step counts) the student is evaluated with."""
  sampler, steps = MODE_SAMPLING[config.mode]
  if steps is None:
    steps = [int(config.progressive.student_steps)]
  sampler = config.eval.sampler or sampler
  steps = [int(s) for s in (config.eval.steps or steps)]
  if sampler not in SAMPLERS:
    raise errors.ConfigError(f'config.eval.sampler={sampler!r}; use one of {SAMPLERS}.')
  for s in steps + [int(s) for s in config.eval.teacher_steps] + [config.eval.reference_steps]:
    config_utils.check_count(s, 'config.eval.steps / teacher_steps / reference_steps',
                             meaning='sampler steps')
  if config.eval.teacher_sampler not in samplers.SAMPLERS:
    raise errors.ConfigError(f'config.eval.teacher_sampler={config.eval.teacher_sampler!r}; use '
                             f'one of {samplers.SAMPLERS}.')
  return sampler, steps


def make_sampler(module: nn.Module, sampler: str, steps: int, *, sigma_min: float,
                 sigma_max: float, rho: float, seed: int = 0
                 ) -> Callable[[PyTree, Array, Array | None], Array]:
  """A jitted `(variables, noise [B,H,W,C], labels) -> images in [-1, 1]` for one step count."""
  def fn(variables, noise, labels):
    denoise = lambda x, s: module.apply(variables, x, s, labels, train=False)
    if sampler == 'consistency':
      grid = edm.step_sigmas(steps, sigma_min, sigma_max, rho)
      out = samplers.consistency_sample(denoise, noise, jax.random.key(seed),
                                        [grid[i] for i in range(1, steps)], sigma_min, sigma_max)
    else:
      out = samplers.sample(denoise, noise, steps, sampler, sigma_min, sigma_max, rho)
    return jnp.clip(out, -1.0, 1.0)
  return jax.jit(fn)


def nfe(sampler: str, steps: int) -> int:
  return steps if sampler == 'consistency' else samplers.nfe(sampler, steps)


class DiffusionEvaluation:
  """Grids at every evaluation; FID/KID/PR per step count, PSNR/SSIM vs the teacher and cost at the
  end."""

  def __init__(self, config: ml_collections.ConfigDict, workdir: str, run: Any,
               student: nn.Module, model_cfg: dict[str, Any], teacher: teacher_lib.Teacher | None):
    ev = config.eval
    self._workdir, self._source, self._shape = workdir, run.train_source, run.image_shape
    self._student, self._teacher, self._model_cfg = student, teacher, model_cfg
    self._sampler, self._steps = sampling_of(config)
    self._t_sampler = ev.teacher_sampler
    self._t_steps = [int(s) for s in ev.teacher_steps]
    self._ref = (ev.reference_sampler, int(ev.reference_steps))
    self._seed, self._batch, self._n = int(ev.seed), int(ev.batch_size), int(ev.num_samples)
    self._pairs, self._total = int(ev.num_pairs), int(config.total_steps)
    config_utils.check_count(ev.throughput_batch, 'config.eval.throughput_batch', meaning='images')
    self._tp_batch = int(ev.throughput_batch)
    self._classes = int(model_cfg.get('num_classes', 0) or 0)
    self._extractor_args = (ev.feature_fn, ev.classifier_checkpoint, ev.feature_layer,
                           int(ev.feature_crop))
    self._checkpoint = config.teacher.checkpoint
    self._sig = dict(sigma_min=float(config.sigma.sigma_min),
                     sigma_max=float(config.sigma.sigma_max), rho=float(config.sigma.rho))
    self._fns: dict[tuple[str, str, int], Callable[..., Array]] = {}
    key = jax.random.key(self._seed)
    self._grid_noise = jax.random.normal(key, (int(ev.grid_size), *run.image_shape))
    self._grid_y = (jnp.arange(int(ev.grid_size), dtype=jnp.int32) % self._classes
                    if self._classes else None)
    self._t_vars = jax.device_get(teacher.variables) if teacher is not None else None
    self._grid_ref = (self._sample('teacher', *self._ref)(self._t_vars, self._grid_noise,
                                                          self._grid_y)
                      if teacher is not None else None)

  @property
  def sampling(self) -> dict[str, Any]:
    """What the exported denoiser is meant to be sampled with (saved in the run's meta)."""
    return {'sampler': self._sampler, 'steps': self._steps,
            'precond': self._model_cfg.get('precond', 'edm')}

  def _sample(self, who: str, sampler: str, steps: int) -> Callable[..., Array]:
    key = (who, sampler, steps)
    if key not in self._fns:
      module = self._student if who == 'student' else self._teacher.module
      self._fns[key] = make_sampler(module, sampler, steps, seed=self._seed, **self._sig)
    return self._fns[key]

  def _student_vars(self, state: Any) -> PyTree:
    return {'params': parallel.fetch(state.ema)}

  def evaluate(self, state: Any, step: int, writer: Any) -> dict[str, float]:
    s_vars = self._student_vars(state)
    rows, scalars = [], {}
    if self._grid_ref is not None:
      rows.append((f'teacher {self._ref[0]} {self._ref[1]}', np.asarray(self._grid_ref)))
    for n in self._steps:
      imgs = np.asarray(self._sample('student', self._sampler, n)(s_vars, self._grid_noise,
                                                                 self._grid_y))
      rows.append((f'student {n} step{"s" if n > 1 else ""}', imgs))
      if self._grid_ref is not None:
        rep = gen_eval.pair_report(imgs, np.asarray(self._grid_ref), f'vs_teacher_{n}_')
        scalars.update({f'eval/{k}': v for k, v in rep.items()})
    gen_eval.write_grid(self._workdir, 'teacher_vs_student', step,
                        gen_eval.interleave_rows(rows, 16), writer)
    return scalars

  def _quality(self, extractor: Any, fn: Callable[..., Array], variables: PyTree
               ) -> dict[str, Any]:
    shape = self._shape
    sample = lambda z, y: fn(variables, jnp.asarray(z).reshape(-1, *shape), y)
    return gen_eval.generator_quality(sample, extractor, self._source, num_samples=self._n,
                                      batch=self._batch, seed=self._seed,
                                      latent_dim=int(np.prod(shape)), num_classes=self._classes)

  def _cost(self, module: nn.Module, variables: PyTree, sampler: str, steps: int
            ) -> dict[str, Any]:
    x1 = jnp.zeros((1, *self._shape), jnp.float32)
    per_nfe = cost.flops(lambda v, x: module.apply(v, x, jnp.ones((1,)), None, train=False),
                         variables, x1)
    fn = self._sample('student' if module is self._student else 'teacher', sampler, steps)
    noise = jnp.zeros((self._tp_batch, *self._shape), jnp.float32)
    ips = cost.throughput(lambda v, x: fn(v, x, None), variables, noise, n_iters=3, warmup=1,
                          items_per_call=self._tp_batch)
    return {'params': cost.param_count(variables['params']), 'flops_per_nfe': per_nfe,
            'sampler': sampler, 'steps': steps, 'nfe': nfe(sampler, steps),
            'flops_per_image': per_nfe * nfe(sampler, steps), 'images_per_sec': ips}

  def finalize(self, state: Any, writer: Any) -> dict[str, Any]:
    s_vars = self._student_vars(state)
    out: dict[str, Any] = {'student': {'model': self._model_cfg, 'sampler': self._sampler,
                                       'cost': {n: self._cost(self._student, s_vars,
                                                              self._sampler, n)
                                                for n in self._steps}}}
    scalars: dict[str, float] = {}
    noise, y = gen_eval.latents(self._seed + 7, self._pairs, int(np.prod(self._shape)),
                                self._classes)
    noise = noise.reshape(-1, *self._shape)
    chunks = lambda fn, v: gen_eval.sample_images(lambda xs, ys: fn(v, xs, ys), noise, y,
                                                   self._batch)
    final_rows, ref = [], None
    if self._teacher is not None:
      ref = chunks(self._sample('teacher', *self._ref), self._t_vars)
      out['teacher'] = {'model': self._teacher.model_config, 'checkpoint': self._checkpoint,
                        'reference': self._cost(self._teacher.module, self._t_vars, *self._ref)}
      final_rows.append((f'teacher {self._ref[0]} {self._ref[1]}', ref[:64]))
    for n in self._steps:
      imgs = chunks(self._sample('student', self._sampler, n), s_vars)
      final_rows.append((f'student {n}', imgs[:64]))
      if ref is not None:
        out['student'].setdefault('vs_teacher', {})[n] = {
            **gen_eval.pair_report(imgs, ref, ''), 'num_pairs': self._pairs}
    for n in self._t_steps:
      final_rows.append((f'teacher {self._t_sampler} {n}',
                         chunks(self._sample('teacher', self._t_sampler, n), self._t_vars)[:64]))
    extractor = gen_eval.feature_extractor(*self._extractor_args, self._shape)
    if extractor is not None:
      for n in self._steps:
        q = self._quality(extractor, self._sample('student', self._sampler, n), s_vars)
        out['student'].setdefault('quality', {})[n] = q
        scalars[f'final/fid_student_{n}'] = q['fid']
      for n in self._t_steps:
        q = self._quality(extractor, self._sample('teacher', self._t_sampler, n), self._t_vars)
        out['teacher'].setdefault('quality', {})[f'{self._t_sampler}_{n}'] = q
        scalars[f'final/fid_teacher_{self._t_sampler}_{n}'] = q['fid']
    if scalars:
      writer.write_scalars(self._total, scalars)
    gen_eval.write_grid(self._workdir, 'final_teacher_vs_student', self._total,
                        gen_eval.interleave_rows(final_rows, 16), writer)
    return out
