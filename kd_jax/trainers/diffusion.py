"""Diffusion training and distillation: one trainer, five modes, on the distillation core.

Every network is an `edm_unet` denoiser D(x; σ) in the EDM parameterization (`kd_jax.diffusion`).
Each step draws data x, noise n and levels σ; the mode decides the student's input, the regression
target and its weight; the composed loss reads the outputs dict (`kd_jax.keys`):

  student_images   D_s(x_σ; σ) (consistency: f_θ(x_{n+1}, σ_{n+1}))
  target_images    the mode's target (below);   loss_weight   its per-example weight
  clean_images     x;   teacher_images   D_t(x_σ; σ) (compress);   student_features/<p>,
  teacher_features/<p>, adapted/<s>:<t>   U-Net features (compress: feature KD through adapters)
  frozen_student_features, frozen_teacher_features   a frozen classifier on the student's output
                   and on the target (consistency with an LPIPS-style metric)

  teacher       (no teacher) x_σ = x + σn, ln σ ~ N(−1.2, 1.2²); target x, weight λ(σ) (EDM).
  compress      a smaller U-Net on the teacher's inputs: target D_t(x_σ; σ), weight λ(σ), plus
                feature terms (BK-SDM-style output + feature KD).
  progressive   one round of progressive distillation (Salimans & Ho 2022): the student takes
                `progressive.student_steps` DDIM steps where the teacher took twice as many; the
                target x̃ makes one student step land on two teacher steps; weight λ(σ_t).
                The student starts from the teacher's weights. `progressive_distill` chains rounds.
  consistency   consistency distillation (Song et al. 2023): x_{n+1} = x + σ_{n+1}z on an
                N-level grid, one teacher Heun step to σ_n, target f_θ⁻(x̂_n, σ_n) of the EMA
                "target" network θ⁻ (rate `consistency.target_ema`), weight 1; the student uses the
                consistency preconditioning and starts from the teacher's weights.
  dmd           one-step distribution matching, data-free (DMD2, Yin et al. 2024): the generator
                G(z) = D_s(σ_max·z; σ_max) starts from the teacher; each step first trains a "fake"
                denoiser (also from the teacher) `dmd.fake_updates` times with EDM's loss on fresh
                G samples (the two-timescale rule), then moves G along the KL gradient between
                the teacher's and the fake denoiser's predictions (`targets.dmd_target`), weight ½.
                No data and no regression loss; the optional GAN term of DMD2 is not included.

Three pytrees as everywhere: the student (+ adapters: trained, checkpointed; the student's EMA is
evaluated and exported), the frozen teacher (an argument of the step, never checkpointed); DMD's
fake denoiser is a second trained role with its own optimizer, checkpointed, never exported.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import ml_collections

from kd_jax import config_utils, errors, losses, optim, parallel
from kd_jax import teacher as teacher_lib
from kd_jax.data import augment
from kd_jax.diffusion import edm, targets
from kd_jax.distill import core
from kd_jax.losses.compose import Composite
from kd_jax.train_state import TrainState, step_key
from kd_jax.trainers import common, diffusion_eval, gan_parts, loop
from kd_jax.types import Array, Batch, PyTree

MODES = ('teacher', 'compress', 'progressive', 'consistency', 'dmd')
# Modes whose student is the teacher's architecture and starts from its weights.
FROM_TEACHER = ('progressive', 'consistency', 'dmd')
OFFERS = ('student_images', 'target_images', 'loss_weight', 'clean_images', 'teacher_images',
          'student_features', 'teacher_features', 'adapted', 'frozen_student_features',
          'frozen_teacher_features', 'frozen_student_embedding', 'frozen_teacher_embedding',
          'frozen_student_logits', 'frozen_teacher_logits')


@flax.struct.dataclass
class DiffusionState:
  student: TrainState   # params = {'student': ..., 'extras': {'adapters': ...}}
  ema: PyTree           # EMA of the student's params: what is evaluated and exported
  target: PyTree        # consistency: θ⁻, the target network's params; otherwise {}
  fake: Any             # dmd: the fake denoiser's TrainState; otherwise {}


def default_config() -> ml_collections.ConfigDict:
  """Every field a diffusion config may set."""
  c = loop.default_config(trainer='diffusion', total_steps=2000, eval_every=0)
  c.mode = 'teacher'
  c.data = common.data_config(batch_size=128)
  # {} with a teacher: the teacher's own architecture (progressive, consistency).
  c.model = {'name': 'edm_unet'}
  c.teacher = common.teacher_config()
  c.init_from_teacher = False   # progressive and consistency always start from the teacher
  c.losses = [('weighted_l2', 1.0, {})]
  c.adapter = 'conv1x1'
  c.frozen_net = ml_collections.ConfigDict(dict(checkpoint='', layers=[]))
  c.optimizer = optim.default_optimizer_config()
  c.optimizer.update(dict(name='adam', learning_rate=1e-3, schedule='constant', b1=0.9,
                          b2=0.999, warmup_steps=0))
  c.ema_decay = 0.999
  c.sigma = ml_collections.ConfigDict(dict(p_mean=edm.P_MEAN, p_std=edm.P_STD,
                                           sigma_min=edm.SIGMA_MIN, sigma_max=edm.SIGMA_MAX,
                                           rho=edm.RHO))
  c.progressive = ml_collections.ConfigDict(dict(student_steps=8))
  c.consistency = ml_collections.ConfigDict(dict(num_scales=18, target_ema=0.95))
  # DMD2: fake-denoiser updates per generator update (their TTUR ratio is 5), its learning rate
  # (0: the student's), and the Karras positions t ∈ [min, max] the KL gradient's σ(t) is drawn
  # from (DMD2 draws timesteps in [0.02, 0.98]·T).
  c.dmd = ml_collections.ConfigDict(dict(fake_updates=5, fake_learning_rate=0.0,
                                         min_position=0.02, max_position=0.98))
  c.eval = diffusion_eval.default_eval_config()
  return c


@dataclasses.dataclass(frozen=True, eq=False)
class Spec:
  """Plain values of the step (built once at the boundary; hashable by identity)."""
  mode: str
  distiller: core.Distiller
  losses: Composite
  teacher: nn.Module | None
  num_classes: int
  ema_decay: float
  p_mean: float = edm.P_MEAN
  p_std: float = edm.P_STD
  sigma_min: float = edm.SIGMA_MIN
  sigma_max: float = edm.SIGMA_MAX
  rho: float = edm.RHO
  student_steps: int = 8
  num_scales: int = 18
  target_ema: float = 0.95
  fake_updates: int = 5
  dmd_positions: tuple[float, float] = (0.02, 0.98)


def _bc(s: Array) -> Array:
  return s[:, None, None, None]


def _inputs(spec: Spec, x: Array, rng: Array) -> tuple[Array, Array, dict[str, Array]]:
  """(student input, its σ [B], mode-specific values) for teacher/compress/progressive."""
  b = x.shape[0]
  k_sigma, k_noise = jax.random.split(rng)
  noise = jax.random.normal(k_noise, x.shape, x.dtype)
  if spec.mode == 'progressive':
    grid = edm.step_sigmas(spec.student_steps, spec.sigma_min, spec.sigma_max, spec.rho)
    fine = edm.step_sigmas(2 * spec.student_steps, spec.sigma_min, spec.sigma_max, spec.rho)
    i = jax.random.randint(k_sigma, (b,), 0, spec.student_steps)
    sigma_t, sigma_s, sigma_m = grid[i], grid[i + 1], fine[2 * i + 1]
    return x + _bc(sigma_t) * noise, sigma_t, {'sigma_s': sigma_s, 'sigma_m': sigma_m}
  sigma = edm.training_sigmas(k_sigma, b, spec.p_mean, spec.p_std)
  return x + _bc(sigma) * noise, sigma, {}


def _denoising_loss(apply: Any, x: Array, rng: Array, spec: Spec) -> Array:
  """EDM's loss of the denoiser `apply(x_σ, σ)` on clean x: mean_b λ(σ_b)·mean((D − x)²)."""
  k_sigma, k_noise = jax.random.split(rng)
  sigma = edm.training_sigmas(k_sigma, x.shape[0], spec.p_mean, spec.p_std)
  x_sigma = x + _bc(sigma) * jax.random.normal(k_noise, x.shape, x.dtype)
  err = jnp.mean((apply(x_sigma, sigma) - x) ** 2, axis=tuple(range(1, x.ndim)))
  return jnp.mean(edm.loss_weight(sigma) * err)


def _dmd_fake_updates(spec: Spec, fake: TrainState, generate: Any, shape: tuple[int, ...],
                      labels: Array | None, rng: Array) -> tuple[TrainState, Array]:
  """`spec.fake_updates` steps of the fake denoiser on fresh samples of the (fixed) generator."""
  def one(fs: TrainState, key: Array) -> tuple[TrainState, Array]:
    k_z, k_loss = jax.random.split(key)
    x_gen = jax.lax.stop_gradient(generate(jax.random.normal(k_z, shape)))
    apply = lambda p: (lambda xx, s: spec.teacher.apply({'params': p}, xx, s, labels))
    loss, grads = jax.value_and_grad(lambda p: _denoising_loss(apply(p), x_gen, k_loss, spec))(
        fs.params)
    return fs.apply_gradients(grads, fs.model_state), loss
  # Unrolled: XLA:CPU runs a while-loop body holding convolution gradients ~9× slower than the
  # same updates inlined (measured: 0.09 vs 0.80 DMD step/s at batch 32, same losses).
  fake, fake_losses = jax.lax.scan(one, fake, jax.random.split(rng, spec.fake_updates),
                                   unroll=True)
  return fake, jnp.mean(fake_losses)


def train_step(state: DiffusionState, teacher: PyTree, batch: Batch, rng: Array, *, spec: Spec
               ) -> tuple[DiffusionState, dict[str, Array]]:
  """One student update of the mode (see the module docstring), then the EMA(s)."""
  st, d = state.student, spec.distiller
  x = augment.normalize(batch['image'])
  labels = batch['label'] if spec.num_classes else None
  rng_t = step_key(rng, st.step, 'noise')
  t_apply = (lambda xx, s: spec.teacher.apply(teacher['teachers'][0], xx, s, labels))
  t_out: dict[str, Any] = {}
  fake, extra_metrics = state.fake, {}
  if spec.mode == 'dmd':
    k_f, k_z, k_t, k_n = jax.random.split(rng_t, 4)
    sigma = jnp.full((x.shape[0],), spec.sigma_max, x.dtype)
    generate = lambda z: d.student.apply({'params': st.params['student']}, z * spec.sigma_max,
                                         sigma, labels)
    fake, extra_metrics['fake_loss'] = _dmd_fake_updates(spec, fake, generate, x.shape, labels,
                                                         k_f)
    x_in = spec.sigma_max * jax.random.normal(k_z, x.shape, x.dtype)
    x_gen = d.student.apply({'params': st.params['student']}, x_in, sigma, labels)
    lo, hi = spec.dmd_positions
    sigma_t = edm.karras_position(jax.random.uniform(k_t, (x.shape[0],), minval=lo, maxval=hi),
                                  spec.sigma_min, spec.sigma_max, spec.rho)
    x_t = x_gen + _bc(sigma_t) * jax.random.normal(k_n, x.shape, x.dtype)
    target = targets.dmd_target(x_gen, t_apply(x_t, sigma_t),
                                spec.teacher.apply({'params': fake.params}, x_t, sigma_t, labels))
    weight = jnp.full_like(sigma, 0.5)
  elif spec.mode == 'consistency':
    grid = edm.discretization(spec.num_scales, spec.sigma_min, spec.sigma_max, spec.rho)
    k_n, k_z = jax.random.split(rng_t)
    n = jax.random.randint(k_n, (x.shape[0],), 0, spec.num_scales - 1)
    sigma, sigma_prev = grid[n + 1], grid[n]
    x_in = x + _bc(sigma) * jax.random.normal(k_z, x.shape, x.dtype)
    x_hat = targets.heun_ode_step(t_apply, x_in, sigma, sigma_prev)
    target = d.student.apply({'params': state.target}, x_hat, sigma_prev, labels)
    weight = jnp.ones_like(sigma)
  else:
    x_in, sigma, extra = _inputs(spec, x, rng_t)
    weight = edm.loss_weight(sigma)
    if spec.mode == 'teacher':
      target = x
    elif spec.mode == 'compress':
      t_out = d.teacher_outputs(teacher, x_in, sigma=sigma, labels=labels)
      target = t_out['teacher_images']
    else:  # progressive
      x_s = targets.teacher_two_steps(t_apply, x_in, sigma, extra['sigma_m'], extra['sigma_s'])
      target = targets.progressive_target(x_in, x_s, sigma, extra['sigma_s'])
  values = jax.lax.stop_gradient({**t_out, 'target_images': target, 'loss_weight': weight,
                                  'clean_images': x})
  if d.critic is not None:
    values.update(jax.lax.stop_gradient(d.critic.outputs('teacher', teacher['critic'],
                                                         values['target_images'], None)))

  def loss_fn(params):
    out, model_state = d.student_outputs(params, st.model_state, x_in, values, tree=teacher,
                                         train=True, sigma=sigma, labels=labels)
    total, terms = spec.losses({**values, **out}, st.step)
    return total, (terms, model_state)

  (total, (terms, model_state)), grads = jax.value_and_grad(loss_fn, has_aux=True)(st.params)
  new = st.apply_gradients(grads, model_state)
  # EMA warm-up (tf.train.ExponentialMovingAverage's num_updates rule), as the GAN trainer's G_ema.
  decay = jnp.minimum(spec.ema_decay, (1.0 + st.step) / (10.0 + st.step))
  ema = gan_parts.ema(state.ema, new.params['student'], decay)
  target_params = (gan_parts.ema(state.target, new.params['student'], spec.target_ema)
                   if spec.mode == 'consistency' else state.target)
  return (DiffusionState(student=new, ema=ema, target=target_params, fake=fake),
          {'loss': total, **terms, **extra_metrics, 'sigma_mean': jnp.mean(sigma)})


def _check_config(config: ml_collections.ConfigDict) -> None:
  if config.mode not in MODES:
    raise errors.ConfigError(f'config.mode={config.mode!r}; use one of {MODES}.')
  if config.mode != 'teacher' and not config.teacher.checkpoint:
    raise errors.ConfigError(f'config.mode={config.mode!r} distils a teacher: set '
                             'config.teacher.checkpoint to the --workdir of a diffusion teacher '
                             "run (or 'pretrained:fashion_mnist/edm').")
  if config.mode == 'teacher' and config.teacher.checkpoint:
    raise errors.ConfigError("config.mode='teacher' trains from data only; clear "
                             'config.teacher.checkpoint or pick a distillation mode.')
  config_utils.check_count(config.progressive.student_steps, 'config.progressive.student_steps',
                           meaning='student sampler steps (the teacher takes twice as many)')
  config_utils.check_count(config.consistency.num_scales, 'config.consistency.num_scales', low=2,
                           meaning='noise levels of the consistency grid')
  for field, value in (('ema_decay', config.ema_decay),
                       ('consistency.target_ema', config.consistency.target_ema)):
    if not 0.0 <= float(value) < 1.0:
      raise errors.ConfigError(f'config.{field}={value} must lie in [0, 1).')
  config_utils.check_count(config.dmd.fake_updates, 'config.dmd.fake_updates',
                           meaning='fake-denoiser updates per generator update')
  lo, hi = float(config.dmd.min_position), float(config.dmd.max_position)
  if not 0.0 <= lo < hi <= 1.0:
    raise errors.ConfigError(f'config.dmd.min_position={lo}, max_position={hi}: need '
                             '0 <= min < max <= 1 (positions t of the Karras schedule σ(t)).')
  if float(config.dmd.fake_learning_rate) < 0:
    raise errors.ConfigError(f'config.dmd.fake_learning_rate={config.dmd.fake_learning_rate} '
                             "must be >= 0 (0: the student's learning rate).")


def _model_config(config: ml_collections.ConfigDict, teacher: teacher_lib.Teacher | None
                  ) -> dict[str, Any]:
  model = config_utils.to_dict(config.model)
  if teacher is not None and (not model or list(model) == ['name']):
    model = dict(teacher.model_config)  # the teacher's own architecture
  if config.mode == 'consistency':
    model = {**model, 'precond': 'consistency'}  # the same parameters, boundary-respecting output
  return model


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains (mode 'teacher') or distils (other modes) the denoiser `config.model`."""
  _check_config(config)
  run = common.prepare(config, default_config(), workdir, with_eval=False)
  x0 = jnp.zeros((1, *run.image_shape), jnp.float32)
  s0 = jnp.ones((1,), jnp.float32)
  teacher = diffusion_eval.restore_denoiser_teacher(config, run.image_shape) \
      if config.mode != 'teacher' else None
  model_cfg = _model_config(config, teacher)
  student = config_utils.build_model(model_cfg, 'config.model')
  num_classes = int(model_cfg.get('num_classes', 0) or 0)
  y0 = jnp.zeros((1,), jnp.int32) if num_classes else None
  composite = losses.compose(config.losses)
  required = composite.required_keys
  parsed = common.check_keys(required, OFFERS, 'diffusion', 0 if teacher is None else 1)
  reads_t = sorted(str(k) for k in parsed if k.family.startswith('teacher') or k.family == 'adapted')
  if reads_t and config.mode != 'compress':
    raise errors.ConfigError(f'config.losses reads {reads_t}, which only '
                             f"config.mode='compress' provides (mode is {config.mode!r}).")
  critic, critic_net = None, None
  if any(k.startswith('frozen_') for k in required):
    if config.mode != 'consistency':
      raise errors.ConfigError('config.losses reads frozen_* keys, which only '
                               "config.mode='consistency' provides (an LPIPS-style metric).")
    critic, critic_net = common.restore_critic(
        config.frozen_net.checkpoint, 'config.frozen_net', role='model',
        layers=config.frozen_net.layers, required=required, example=x0)
  with config_utils.field_context('config.losses'):
    distiller = core.build(student, [teacher] if teacher is not None else [], required,
                           output='images', example=x0, call_kwargs={'sigma': s0, 'labels': y0},
                           adapter=config.adapter, critic=critic)
  spec = Spec(config.mode, distiller, composite, teacher.module if teacher else None, num_classes,
              float(config.ema_decay), float(config.sigma.p_mean), float(config.sigma.p_std),
              float(config.sigma.sigma_min), float(config.sigma.sigma_max),
              float(config.sigma.rho), int(config.progressive.student_steps),
              int(config.consistency.num_scales), float(config.consistency.target_ema),
              int(config.dmd.fake_updates),
              (float(config.dmd.min_position), float(config.dmd.max_position)))
  from_teacher = config.mode in FROM_TEACHER or bool(config.init_from_teacher)
  if from_teacher and teacher is None:
    raise errors.ConfigError('config.init_from_teacher=True needs config.teacher.checkpoint.')
  init_params = (_teacher_params(student, teacher, x0, s0, y0) if from_teacher else None)
  tx = optim.make_optimizer(config.optimizer, config.total_steps)
  fake_tx = None
  if config.mode == 'dmd':
    fake_opt = ml_collections.ConfigDict(config_utils.to_dict(config.optimizer))
    fake_opt.learning_rate = (float(config.dmd.fake_learning_rate)
                              or float(config.optimizer.learning_rate))
    fake_tx = optim.make_optimizer(fake_opt, config.total_steps * int(config.dmd.fake_updates))

  def init(rng: Array) -> DiffusionState:
    params, model_state = distiller.init(rng, x0, sigma=s0, labels=y0)
    if init_params is not None:
      params = {**params, 'student': init_params}
    target = params['student'] if config.mode == 'consistency' else {}
    fake = (TrainState.create(params=init_params, model_state={}, tx=fake_tx)
            if fake_tx is not None else {})
    return DiffusionState(TrainState.create(params=params, model_state=model_state, tx=tx),
                          ema=params['student'], target=target, fake=fake)

  teacher_tree = parallel.place_teacher(distiller.teacher_tree([teacher] if teacher else [],
                                                           critic_net), run.mesh)
  evaluation = diffusion_eval.DiffusionEvaluation(config, workdir, run, student, model_cfg,
                                                  teacher)
  task = loop.Task(
      init=init, step=functools.partial(train_step, spec=spec), teacher=teacher_tree,
      train_batches=common.train_batches(config, run.train_source),
      evaluate=evaluation.evaluate, export=export, finalize=evaluation.finalize,
      meta={'trainer': 'diffusion', 'mode': config.mode, 'dataset': config.data.name,
            'image_shape': list(run.image_shape), 'sampling': evaluation.sampling,
            'exported': {'denoiser': model_cfg}})
  return loop.run(task, loop.Settings.from_config(config), workdir, run.mesh)


def _teacher_params(student: nn.Module, teacher: teacher_lib.Teacher, x0: Array, s0: Array,
                    y0: Array | None) -> PyTree:
  """The teacher's params as the student's initial ones (same architecture required)."""
  abstract = jax.eval_shape(lambda: student.init(jax.random.key(0), x0, s0, y0))['params']
  shapes = lambda t: jax.tree.map(lambda a: tuple(a.shape), t)
  if shapes(abstract) != shapes(teacher.variables['params']):
    raise errors.ConfigError(
        f'the student starts from the teacher, so config.model must be the teacher\'s architecture '
        f'({teacher.model_config}); leave config.model empty to use it, or set '
        'config.init_from_teacher=False (mode compress only).')
  return teacher.variables['params']


def export(state: DiffusionState) -> PyTree:
  """The student's EMA params (adapters, the consistency target and DMD's fake denoiser stay in
  the state)."""
  return {'denoiser': {'params': state.ema}}
