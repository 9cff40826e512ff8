"""Generator distillation: a frozen teacher generator (G_ema of a GAN run) → a small student generator.

Teacher and student see the same latents (z, per-layer noise key, class). Loss terms read these keys
of the outputs dict (`kd_jax.keys`):

  student_images / teacher_images      G_s(z), G_t(z) in [-1, 1]            (l1, l2)
  student_features/<p>, teacher_features/<p>, adapted/<s>:<t>
                                       generator intermediate features        (feature_mse, relation_kl)
  frozen_student_features, frozen_teacher_features
                                       lists of feature maps of a frozen critic (the teacher's D or a
                                       trained classifier) at `config.frozen_net.layers`     (lpips)
  frozen_student_embedding, frozen_teacher_embedding   its last feature, pooled   (relation_kl)
  frozen_student_logits, frozen_teacher_logits          its logits (tempered_sigmoid_kl, kd)
  fake_logits                          a trainable discriminator on student images (gan_ns_g); it is
                                       trained to tell teacher samples (data-free mode) or real images
                                       (data mode) from student samples. With
                                       `config.adversarial.init_from='teacher'` that D starts from the
                                       teacher run's exported discriminator (GAN-compression recipes
                                       such as CAGAN, Liu et al. 2021, reuse the teacher's D: it
                                       already knows the data) instead of a fresh init.

With `config.ema_decay` > 0 an exponential moving average of the student's weights (the GAN
trainer's G_ema rule) is what is evaluated and exported, as for a GAN trained from scratch.

Three pytrees: the student (exported), extras (adapters + the adversarial discriminator: trained,
checkpointed, never exported), the teacher (frozen, an argument of the step, never checkpointed).
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
from kd_jax.distill import core
from kd_jax.losses.compose import Composite
from kd_jax.train_state import TrainState, step_key
from kd_jax.trainers import common, gan, gan_parts, gen_eval, loop
from kd_jax.trainers import generator_distill_eval as distill_eval
from kd_jax.types import Array, Batch, PyTree

OFFERS = ('student_images', 'teacher_images', 'student_features', 'teacher_features', 'adapted',
          'fake_logits') + tuple(f'frozen_{w}_{x}' for w in ('student', 'teacher')
                                 for x in ('logits', 'features', 'embedding'))
FROZEN_KINDS = ('none', 'teacher_discriminator', 'classifier')


@flax.struct.dataclass
class DistillState:
  student: TrainState        # params = {'student': ..., 'extras': {'adapters': ...}}
  disc: TrainState | None    # adversarial discriminator (extras; never exported)
  ema: PyTree = None         # ema_decay > 0: {'params', **model_state} of the student's EMA


def default_config() -> ml_collections.ConfigDict:
  c = loop.default_config(trainer='generator_distill', total_steps=2000, eval_every=500)
  c.mode = 'data_free'  # or 'data': real images are the discriminator's "real" class
  c.data = common.data_config(batch_size=64)
  c.model = {'name': 'dcgan_generator', 'latent_dim': 64}
  c.teacher = common.teacher_config()
  c.frozen_net = ml_collections.ConfigDict(dict(kind='none', checkpoint='', layers=[]))
  c.adversarial = ml_collections.ConfigDict(dict(
      discriminator={'name': 'dcgan_discriminator'}, r1_gamma=1.0, r1_every=1,
      init_from='', fresh_latents=False, optimizer=optim.default_optimizer_config()))
  c.adversarial.optimizer.update(dict(name='adam', learning_rate=2e-4, schedule='constant', b1=0.0,
                                      b2=0.99))
  c.losses = [('l1', 1.0, {})]
  c.adapter = 'conv1x1'
  c.optimizer = optim.default_optimizer_config()
  # > 0: evaluate and export an EMA of the student (a GAN's G_ema rule); 0: its own weights.
  c.ema_decay = 0.0
  c.eval = gan.default_eval_config()
  c.eval.num_pairs = 2000
  return c


@dataclasses.dataclass(frozen=True, eq=False)
class Spec:
  distiller: core.Distiller
  losses: Composite
  latent_dim: int
  num_classes: int = 0
  data_mode: bool = False        # real images (not teacher samples) are D's "real" class
  disc: nn.Module | None = None  # the adversarial discriminator, when a term reads fake_logits
  r1_gamma: float = 1.0
  r1_every: int = 1              # > 1: lazy R1 (StyleGAN2's 16)
  ema_decay: float = 0.0         # > 0: keep an EMA of the student (evaluated and exported)
  fresh_latents: bool = False    # the D step's fakes on latents of their own (the GAN trainer's)


def train_step(state: DistillState, teacher: PyTree, batch: Batch, rng: Array, *, spec: Spec
               ) -> tuple[DistillState, dict[str, Array]]:
  """One step: teacher images on shared latents, an optional D update, the student's update."""
  st, d = state.student, spec.distiller
  b = batch['image'].shape[0]
  k_lat, k_noise = step_key(rng, st.step, 'latent'), step_key(rng, st.step, 'noise')
  # With fresh_latents the D step's fakes and the student step draw their latents, labels and noise
  # as the GAN trainer's D and G steps do (`gan.train_step`): then `:data` is that recipe plus the
  # distillation terms, step for step. Otherwise the D step reuses the student step's latents.
  if spec.fresh_latents:
    k_g, k_gn, k_y = (jax.random.fold_in(k_lat, 1), jax.random.fold_in(k_noise, 1),
                      jax.random.fold_in(k_lat, 2))
  else:
    k_g, k_gn, k_y = k_lat, k_noise, jax.random.fold_in(k_lat, 1)
  z = gan_parts.sample_latents(k_g, b, spec.latent_dim)
  y = gan_parts.sample_labels(k_y, b, spec.num_classes) if spec.num_classes else None
  t_out = d.teacher_outputs(teacher, z, rngs={'noise': k_gn}, labels=y)
  metrics: dict[str, Array] = {}
  disc = state.disc
  if spec.disc is not None:
    real = augment.normalize(batch['image']) if spec.data_mode else t_out['teacher_images']
    real_y = batch['label'] if (spec.data_mode and spec.num_classes) else y
    # Fresh: D's fakes on the step's own keys (the G step took fold-ins of them); else the G step's.
    z_d = gan_parts.sample_latents(k_lat, b, spec.latent_dim) if spec.fresh_latents else z
    fake, _ = gan_parts.generate(d.student, {'params': st.params['student'],
                                             **st.model_state['student']}, z_d, real_y,
                                 noise_rng=k_noise if spec.fresh_latents else k_gn, train=True,
                                 mutable=list(st.model_state['student']))
    disc, d_metrics = gan_parts.d_update(disc, spec.disc, real, jax.lax.stop_gradient(fake),
                                         real_y, r1_gamma=spec.r1_gamma, r1_every=spec.r1_every)
    metrics.update(d_metrics)

  def loss_fn(params):
    out, model_state = d.student_outputs(params, st.model_state, z, t_out, tree=teacher,
                                         train=True, rngs={'noise': k_gn}, labels=y)
    if spec.disc is not None:
      out['fake_logits'] = spec.disc.apply({'params': disc.params, **disc.model_state},
                                           out['student_images'], y,
                                           train=True)
    total, terms = spec.losses({**out, **t_out}, st.step)
    return total, (terms, model_state)

  (total, (terms, model_state)), grads = jax.value_and_grad(loss_fn, has_aux=True)(st.params)
  metrics.update({'loss': total, **terms})
  new = st.apply_gradients(grads, model_state)
  ema = state.ema
  if spec.ema_decay > 0:
    # The GAN trainer's warm-up rule, so the average is not dominated by the random init early.
    decay = jnp.minimum(spec.ema_decay, (1.0 + st.step) / (10.0 + st.step))
    ema = {'params': gan_parts.ema(state.ema['params'], new.params['student'], decay),
           **new.model_state['student']}
  return DistillState(student=new, disc=disc, ema=ema), metrics


def _critic(config: ml_collections.ConfigDict, required: frozenset[str], x0: Array,
            y0: Array | None) -> tuple[core.Critic | None, core.Frozen | None]:
  """The frozen critic the `frozen_*` terms read: the teacher run's D or a trained classifier."""
  kind = config.frozen_net.kind
  if kind not in FROZEN_KINDS:
    raise errors.ConfigError(f'config.frozen_net.kind={kind!r}; use one of {FROZEN_KINDS}.')
  if not any(k.startswith('frozen_') for k in required):
    return None, None
  if kind == 'none':
    raise errors.ConfigError(f'config.losses reads frozen_* keys but config.frozen_net.kind={kind!r}; '
                             "set it to 'teacher_discriminator' or 'classifier'.")
  is_d = kind == 'teacher_discriminator'
  return common.restore_critic(
      config.teacher.checkpoint if is_d else config.frozen_net.checkpoint,
      'config.teacher' if is_d else 'config.frozen_net', role='discriminator' if is_d else 'model',
      layers=config.frozen_net.layers, required=required, example=x0, labels=y0 if is_d else None)


def build_spec(config: ml_collections.ConfigDict, teacher: Any, image_shape: tuple[int, ...]
               ) -> tuple[Spec, core.Frozen | None]:
  """The boundary: the loss mix, critic, discriminator and latents of the config, as a `Spec`."""
  zdim = gan_parts.latent_dim(config.model, 'config.model')
  num_classes = gan_parts.num_classes(config.model)
  z0 = jnp.zeros((1, zdim), jnp.float32)
  y0 = jnp.zeros((1,), jnp.int32) if num_classes else None
  composite = losses.compose(config.losses)
  required = composite.required_keys
  common.check_keys(required, OFFERS, 'generator_distill', 1)
  critic, critic_net = _critic(config, required, jnp.zeros((1, *image_shape), jnp.float32), y0)
  student = config_utils.build_model(config.model, 'config.model')
  rngs = {'params': jax.random.key(0), 'noise': jax.random.key(0)}
  with config_utils.field_context('config.losses'):
    distiller = core.build(student, [teacher], required, output='images', example=z0,
                           call_kwargs={'labels': y0}, student_rngs=rngs, adapter=config.adapter,
                           critic=critic)
  disc = (config_utils.build_model(config.adversarial.discriminator,
                                   'config.adversarial.discriminator')
          if 'fake_logits' in required else None)
  config_utils.check_count(config.adversarial.r1_every, 'config.adversarial.r1_every',
                           meaning='D steps per R1 penalty (1: every step; StyleGAN2 uses 16)')
  if not 0.0 <= float(config.ema_decay) < 1.0:
    raise errors.ConfigError(f'config.ema_decay={config.ema_decay} must lie in [0, 1) (0: no EMA; '
                             'a GAN recipe uses e.g. 0.999).')
  return Spec(distiller, composite, zdim, num_classes, config.mode == 'data', disc,
              float(config.adversarial.r1_gamma), int(config.adversarial.r1_every),
              float(config.ema_decay), bool(config.adversarial.fresh_latents)), critic_net


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Distils `config.teacher` (a GAN run) into the generator `config.model`."""
  run = common.prepare(config, default_config(), workdir, with_eval=False)
  gen_eval.check_feature_fn(config.eval.feature_fn)  # a bad import fails now
  if config.mode not in ('data_free', 'data'):
    raise errors.ConfigError(f"config.mode={config.mode!r}; use 'data_free' or 'data'.")
  teacher = distill_eval.restore_generator_teacher(config, run.image_shape)
  spec, critic_net = build_spec(config, teacher, run.image_shape)
  tx = optim.make_optimizer(config.optimizer, config.total_steps)
  d_tx = optim.make_optimizer(config.adversarial.optimizer, config.total_steps,
                              'config.adversarial.optimizer')
  z0 = jnp.zeros((1, spec.latent_dim), jnp.float32)
  y0 = jnp.zeros((1,), jnp.int32) if spec.num_classes else None
  d_start = _discriminator_start(config, spec, run.image_shape, y0)

  def init(rng: Array) -> DistillState:
    params, model_state = spec.distiller.init(rng, z0, student_rngs={'params': rng, 'noise': rng},
                                              labels=y0)
    disc = None
    if spec.disc is not None:
      d_vars = initial_discriminator(spec.disc, d_start, jax.random.fold_in(rng, 2),
                                     run.image_shape, y0)
      disc = TrainState.create(params=d_vars['params'],
                             model_state={k: v for k, v in d_vars.items() if k != 'params'},
                             tx=d_tx)
    ema = None
    if spec.ema_decay > 0:
      ema = jax.tree.map(jnp.copy, {'params': params['student'], **model_state['student']})
    return DistillState(TrainState.create(params=params, model_state=model_state, tx=tx), disc,
                        ema)

  teacher_tree = parallel.place_teacher(spec.distiller.teacher_tree([teacher], critic_net), run.mesh)
  evaluation = distill_eval.DistillEvaluation(config, workdir, run, spec.distiller.student,
                                                teacher, spec.latent_dim, spec.num_classes)
  batches = (common.train_batches(config, run.train_source) if config.mode == 'data'
             else distill_eval.LatentOnlyBatches(config.data.batch_size // jax.process_count(),
                                                   run.image_shape))
  task = loop.Task(
      init=init, step=functools.partial(train_step, spec=spec), teacher=teacher_tree,
      train_batches=batches, evaluate=evaluation.evaluate, export=export,
      finalize=evaluation.finalize,
      meta={'trainer': 'generator_distill', 'dataset': config.data.name,
            'image_shape': list(run.image_shape), 'mode': config.mode,
            'exported': {'generator': config_utils.to_dict(config.model)}})
  return loop.run(task, loop.Settings.from_config(config), workdir, run.mesh)


INIT_FROM = ('', 'teacher')


def _discriminator_start(config: ml_collections.ConfigDict, spec: Spec,
                         image_shape: tuple[int, ...], y0: Array | None) -> PyTree | None:
  """The adversarial D's starting variables: None (a fresh init) or, for `init_from='teacher'`, the
  teacher run's exported discriminator, restored into `config.adversarial.discriminator`'s shapes
  (a mismatch is one CheckpointError naming the leaves)."""
  init_from = config.adversarial.init_from
  if init_from not in INIT_FROM:
    raise errors.ConfigError(f'config.adversarial.init_from={init_from!r}; use one of {INIT_FROM} '
                             "('': a fresh D, 'teacher': the teacher run's discriminator).")
  if not init_from:
    return None
  if spec.disc is None:
    raise errors.ConfigError("config.adversarial.init_from='teacher' but no loss term reads "
                             "fake_logits, so there is no adversarial D; add ('gan_ns_g', w, {}) "
                             "to config.losses or set init_from=''.")
  start = teacher_lib.restore_teacher(
      config.teacher.checkpoint, config.adversarial.discriminator, role='discriminator',
      init_args=(jnp.zeros((1, *image_shape)), y0), init_kwargs={'train': False},
      model_field='config.adversarial.discriminator')
  return start.variables


def initial_discriminator(disc: nn.Module, start: PyTree | None, rng: Array,
                          image_shape: tuple[int, ...], y0: Array | None) -> PyTree:
  """The adversarial D's variables at step 0: `start` (the teacher's) when given, else fresh."""
  if start is not None:
    return start
  return disc.init(rng, jnp.zeros((1, *image_shape)), y0, train=False)


def export(state: DistillState) -> PyTree:
  """Only the student generator (its EMA if kept); adapters and the adversarial D stay in the
  training state."""
  return {'generator': distill_eval.student_variables(state)}
