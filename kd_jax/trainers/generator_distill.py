"""Generator distillation: a frozen teacher generator (G_ema of a GAN run) → a small student generator.

Teacher and student see the same latents (z, per-layer noise key, class). Loss terms come from the
loss registry and read these keys of the outputs dict:

  student_images / teacher_images      G_s(z), G_t(z) in [-1, 1]            (l1, l2)
  student_features/<p>, teacher_features/<p>, adapted/<s>:<t>
                                       generator intermediate features        (feature_mse, relation_kl)
  frozen/student_features, frozen/teacher_features
                                       lists of feature maps of a frozen network (the teacher's D or a
                                       trained classifier) at `config.frozen_net.layers`     (lpips)
  frozen/student_embedding, frozen/teacher_embedding
                                       spatially pooled last frozen feature   (relation_kl)
  frozen/student_logits, frozen/teacher_logits
                                       the frozen network's logits            (tempered_sigmoid_kl for
                                       a discriminator, kd for a classifier)
  fake_logits                          a trainable discriminator on student images (gan_ns_g); it is
                                       trained to tell teacher samples (data-free mode) or real images
                                       (data mode) from student samples.

Three pytrees: the student (exported), extras (adapters + the adversarial discriminator: trained,
checkpointed, never exported), the teacher (frozen, an argument of the step, never checkpointed).
"""
from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from kd_jax import config_utils, errors, losses, models, optim, parallel
from kd_jax import teacher as teacher_lib
from kd_jax import checkpoint as ckpt_lib
from kd_jax.data import augment
from kd_jax.models import features as features_lib
from kd_jax.train_state import TrainState, step_key
from kd_jax.trainers import common, feature_plan, gan, gan_parts, gen_eval, loop
from kd_jax.trainers.feature_plan import ADAPTED, STUDENT, TEACHER, Adapters, FeaturePlan, first
from kd_jax.types import Array, Batch, PyTree

FROZEN_KINDS = ('none', 'teacher_discriminator', 'classifier')


@flax.struct.dataclass
class DistillState:
  student: TrainState        # params = {'student': ..., 'extras': {'adapters': ...}}
  disc: TrainState | None    # adversarial discriminator (extras; never exported)


def default_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.trainer = 'generator_distill'
  c.seed = 0
  c.mode = 'data_free'  # or 'data': real images are the discriminator's "real" class
  c.data = ml_collections.ConfigDict(dict(
      name='fashion_mnist', data_dir='', batch_size=64, cache_in_memory=True, train_split='train',
      eval_split='test'))
  c.model = {'name': 'dcgan_generator', 'latent_dim': 64}
  c.teacher = ml_collections.ConfigDict(dict(checkpoint='', model={}))
  c.frozen_net = ml_collections.ConfigDict(dict(kind='none', checkpoint='', layers=[]))
  c.adversarial = ml_collections.ConfigDict(dict(
      discriminator={'name': 'dcgan_discriminator'}, r1_gamma=1.0,
      optimizer=optim.default_optimizer_config()))
  c.adversarial.optimizer.update(dict(name='adam', learning_rate=2e-4, schedule='constant', b1=0.0,
                                      b2=0.99))
  c.losses = [('l1', 1.0, {})]
  c.optimizer = optim.default_optimizer_config()
  c.eval = gan.default_eval_config()
  c.eval.num_pairs = 2000
  c.total_steps = 2000
  c.log_every = 100
  c.eval_every = 500
  c.checkpoint_every = 500
  c.keep_checkpoints = 2
  return c


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Distils `config.teacher` (a GAN run) into the generator `config.model`."""
  run = common.prepare(config, default_config(), workdir, with_eval=False)
  gen_eval.check_feature_fn(config.eval)  # a bad import fails now, not after training
  mesh, train_src, image_shape = run.mesh, run.train_source, run.image_shape
  if config.mode not in ('data_free', 'data'):
    raise errors.ConfigError(f"config.mode={config.mode!r}; use 'data_free' or 'data'.")
  if config.frozen_net.kind not in FROZEN_KINDS:
    raise errors.ConfigError(f'config.frozen_net.kind={config.frozen_net.kind!r}; use one of '
                             f'{FROZEN_KINDS}.')
  if not config.teacher.checkpoint:
    raise errors.ConfigError('config.teacher.checkpoint is empty; set it to the --workdir of a GAN '
                             'teacher run (configs/fashion_mnist/gan_teacher.py).')
  zdim = gan_parts.latent_dim(config.model, 'config.model')
  s_name, s_kwargs = config_utils.model_kwargs(config.model, 'config.model')
  G_s = models.get(s_name, **s_kwargs)
  num_classes = int(config_utils.to_dict(config.model).get('num_classes', 0) or 0)
  z0 = jnp.zeros((1, zdim), jnp.float32)
  y0 = jnp.zeros((1,), jnp.int32) if num_classes else None
  x0 = jnp.zeros((1, *image_shape), jnp.float32)

  t_meta_shape = ckpt_lib.read_meta(config.teacher.checkpoint,
                                                'config.teacher.checkpoint')[2].get('image_shape')
  if t_meta_shape and tuple(t_meta_shape) != image_shape:
    raise errors.CheckpointError(
        f'config.teacher.checkpoint generates {tuple(t_meta_shape)} images but config.data.name='
        f'{config.data.name!r} has {image_shape}; use a teacher trained at this resolution.')
  teacher = teacher_lib.restore_teacher(config.teacher.checkpoint, config.teacher.model,
                                        role='generator', init_args=(z0, y0),
                                        init_kwargs={'train': False})
  G_t = teacher.module
  t_zdim = gan_parts.latent_dim(teacher.model_config, 'config.teacher.model')
  if t_zdim != zdim:
    raise errors.ConfigError(f'config.model.latent_dim={zdim} but the teacher uses {t_zdim}; the '
                             'student must read the same latents: set config.model.latent_dim='
                             f'{t_zdim}.')

  composite = losses.compose(config.losses)
  keys = composite.required_keys
  plan = FeaturePlan.from_keys(keys)
  needs_frozen = any(k.startswith('frozen/') for k in keys)
  needs_disc = 'fake_logits' in keys

  # The frozen network (teacher D or a classifier) for perceptual / tempered-KL terms.
  frozen_module, frozen_vars, frozen_layers = None, {}, list(config.frozen_net.layers)
  if needs_frozen:
    if config.frozen_net.kind == 'none':
      raise errors.ConfigError('config.losses reads frozen/* keys but config.frozen_net.kind is '
                               "'none'; set it to 'teacher_discriminator' or 'classifier'.")
    if config.frozen_net.kind == 'teacher_discriminator':
      fz = teacher_lib.restore_teacher(config.teacher.checkpoint, {}, role='discriminator',
                                       init_args=(x0, y0), init_kwargs={'train': False})
    else:
      fz = teacher_lib.restore_teacher(config.frozen_net.checkpoint, {}, role='model',
                                       init_args=(x0,), init_kwargs={'train': False},
                                       field='config.frozen_net')
    frozen_module, frozen_vars = fz.module, fz.variables
    if not frozen_layers and any('features' in k or 'embedding' in k for k in keys
                                 if k.startswith('frozen/')):
      raise errors.ConfigError('config.losses reads frozen features but config.frozen_net.layers '
                               "is empty; list module paths, e.g. ['block0', 'block1'].")
  is_disc_frozen = config.frozen_net.kind == 'teacher_discriminator'

  def frozen_apply(fvars: PyTree, images: Array, labels: Array | None):
    if is_disc_frozen:
      return features_lib.apply_with_features(frozen_module, fvars, images, frozen_layers,
                                              train=False, labels=labels)[:2]
    return features_lib.apply_with_features(frozen_module, fvars, images, frozen_layers,
                                            train=False)[:2]

  # Validate generator feature paths and size the adapters (shapes only, nothing runs).
  s_shapes = common.feature_shapes(G_s, jax.eval_shape(
      lambda: G_s.init({'params': jax.random.key(0), 'noise': jax.random.key(0)}, z0, y0,
                       train=False)), z0, plan.student_paths, labels=y0)
  t_shapes = common.feature_shapes(G_t, teacher.variables, z0, plan.teacher_paths, labels=y0)
  adapters = Adapters(feature_plan.check_adaptable(plan, s_shapes, t_shapes))
  if frozen_layers and frozen_module is not None:
    jax.eval_shape(lambda v: frozen_apply(v, x0, y0), frozen_vars)

  D = None
  if needs_disc:
    d_name, d_kwargs = config_utils.model_kwargs(config.adversarial.discriminator,
                                                 'config.adversarial.discriminator')
    D = models.get(d_name, **d_kwargs)
  tx = optim.make_optimizer(config.optimizer, config.total_steps)
  d_tx = optim.make_optimizer(config.adversarial.optimizer, config.total_steps)

  def init(rng: Array) -> DistillState:
    g_vars = G_s.init({'params': rng, 'noise': rng}, z0, y0, train=False)
    extras: dict[str, Any] = {}
    if plan.adapted:
      _, feats, _ = features_lib.apply_with_features(G_s, g_vars, z0, plan.student_paths,
                                                     train=False, labels=y0)
      extras['adapters'] = adapters.init(jax.random.fold_in(rng, 1), {
          f'{s}:{t}': first(feats[s]) for s, t in plan.adapted})['params']
    ms = {k: v for k, v in g_vars.items() if k != 'params'}
    student = TrainState.create(params={'student': g_vars['params'], 'extras': extras},
                                model_state=ms, tx=tx)
    disc = None
    if D is not None:
      d_vars = D.init(jax.random.fold_in(rng, 2), x0, y0, train=False)
      disc = TrainState.create(params=d_vars['params'], model_state={}, tx=d_tx)
    return DistillState(student=student, disc=disc)

  def teacher_outputs(t: PyTree, z: Array, y: Array | None, k_noise: Array) -> dict[str, Array]:
    imgs, feats, _ = features_lib.apply_with_features(
        G_t, t['generator'], z, plan.teacher_paths, train=False, labels=y,
        rngs={'noise': k_noise})
    out = {'teacher_images': imgs, **{TEACHER + p: first(f) for p, f in feats.items()}}
    if needs_frozen:
      out.update(_frozen_outputs('teacher', *frozen_apply(t['frozen'], imgs, y)))
    return jax.lax.stop_gradient(out)

  def step(state: DistillState, t: PyTree, batch: Batch, rng: Array):
    st = state.student
    b = batch['image'].shape[0]
    k_lat, k_noise = step_key(rng, st.step, 'latent'), step_key(rng, st.step, 'noise')
    z = gan_parts.sample_latents(k_lat, b, zdim)
    y = (gan_parts.sample_labels(jax.random.fold_in(k_lat, 1), b, num_classes)
         if num_classes else None)
    t_out = teacher_outputs(t, z, y, k_noise)
    metrics: dict[str, Array] = {}
    disc = state.disc
    if D is not None:
      fake, _ = gan_parts.generate(G_s, {'params': st.params['student'], **st.model_state}, z, y,
                                   noise_rng=k_noise, train=True, mutable=list(st.model_state))
      real = (augment.normalize(batch['image']) if config.mode == 'data'
              else t_out['teacher_images'])
      real_y = batch['label'] if (config.mode == 'data' and num_classes) else y
      # One D for both classes: labels of real data in data mode, the sampled labels otherwise.
      disc, d_metrics = gan_parts.d_update(disc, D, real, jax.lax.stop_gradient(fake),
                                           real_y if config.mode == 'data' else y,
                                           r1_gamma=config.adversarial.r1_gamma)
      metrics.update(d_metrics)

    def loss_fn(params):
      imgs, feats, new_ms = features_lib.apply_with_features(
          G_s, {'params': params['student'], **st.model_state}, z, plan.student_paths,
          train=True, labels=y, mutable=list(st.model_state), rngs={'noise': k_noise})
      outputs = {'student_images': imgs, **t_out,
                 **{STUDENT + p: first(f) for p, f in feats.items()}}
      if plan.adapted:
        outputs.update({ADAPTED + k: v for k, v in adapters.apply(
            {'params': params['extras']['adapters']},
            {f'{s}:{t}': first(feats[s]) for s, t in plan.adapted}).items()})
      if needs_frozen:
        outputs.update(_frozen_outputs('student', *frozen_apply(t['frozen'], imgs, y)))
      if D is not None:
        outputs['fake_logits'] = D.apply({'params': disc.params}, imgs, y, train=True)
      total, terms = composite(outputs, st.step)
      return total, (terms, new_ms)

    (total, (terms, new_ms)), grads = jax.value_and_grad(loss_fn, has_aux=True)(st.params)
    new_student = st.apply_gradients(grads, dict(new_ms))
    metrics.update({'loss': total, **terms})
    return DistillState(student=new_student, disc=disc), metrics

  teacher_tree = parallel.replicate({'generator': teacher.variables, 'frozen': frozen_vars}, mesh)

  ek = jax.random.key(config.eval.seed)
  grid_z = gan_parts.sample_latents(ek, config.eval.grid_size, zdim)
  grid_y = (jnp.arange(config.eval.grid_size, dtype=jnp.int32) % num_classes
            if num_classes else None)
  gen_s = jax.jit(lambda v, z, y, k: G_s.apply(v, z, y, train=False, rngs={'noise': k}))
  gen_t = jax.jit(lambda v, z, y, k: G_t.apply(v, z, y, train=False, rngs={'noise': k}))
  t_host = jax.device_get(teacher.variables)
  grid_t = np.asarray(gen_t(t_host, grid_z, grid_y, ek))

  def student_vars(state: DistillState) -> PyTree:
    return parallel.fetch({'params': state.student.params['student'], **state.student.model_state})

  def evaluate(state: DistillState, step_: int, writer: Any) -> dict[str, float]:
    grid_s = np.asarray(gen_s(student_vars(state), grid_z, grid_y, ek))
    gen_eval.write_grid(workdir, 'teacher_vs_student', step_, gen_eval.interleave_rows(
        [('teacher', grid_t), ('student', grid_s)], 16), writer)
    return {f'eval/{k}': v for k, v in gen_eval.pair_report(grid_s, grid_t, 'vs_teacher_').items()}

  def finalize(state: DistillState, writer: Any) -> dict[str, Any]:
    s_vars = student_vars(state)
    n = int(config.eval.num_pairs)
    key = jax.random.key(config.eval.seed + 7)
    z = np.asarray(gan_parts.sample_latents(key, n, zdim))
    y = (np.asarray(gan_parts.sample_labels(jax.random.fold_in(key, 1), n, num_classes))
         if num_classes else None)
    ysl = lambda s, k: None if y is None else y[s:s + k]
    bs = int(config.eval.batch_size)
    s_imgs = gen_eval.batched(lambda zz, yy: gen_s(s_vars, zz, yy, key), n, bs,
                              lambda s, k: z[s:s + k], ysl)
    t_imgs = gen_eval.batched(lambda zz, yy: gen_t(t_host, zz, yy, key), n, bs,
                              lambda s, k: z[s:s + k], ysl)
    pairs = gen_eval.pair_report(s_imgs, t_imgs, 'vs_teacher_')
    pairs['num_pairs'] = n
    out: dict[str, Any] = {
        'student_vs_teacher_same_latents': pairs,
        'student': {'model': config_utils.to_dict(config.model),
                    **gen_eval.cost_report(lambda v, zz: G_s.apply(v, zz, None, train=False),
                                           s_vars, z0)},
        'teacher': {'model': teacher.model_config, 'checkpoint': config.teacher.checkpoint,
                    **gen_eval.cost_report(lambda v, zz: G_t.apply(v, zz, None, train=False),
                                           t_host, z0)},
        'extras_params': int(gen_eval.cost.param_count(state.student.params['extras']))}
    out['params_ratio'] = out['student']['params'] / out['teacher']['params']
    out['flops_ratio'] = out['student']['flops_per_example'] / out['teacher']['flops_per_example']
    if gen_eval.has_feature_extractor(config.eval):
      out['quality_student'] = gan.generator_quality(
          lambda zz, yy: gen_s(s_vars, zz, yy, key), config, train_src, image_shape, zdim,
          num_classes)
      out['quality_teacher'] = gan.generator_quality(
          lambda zz, yy: gen_t(t_host, zz, yy, key), config, train_src, image_shape, zdim,
          num_classes)
      out['fid_ratio_student_over_teacher'] = (out['quality_student']['fid']
                                               / max(out['quality_teacher']['fid'], 1e-9))
    writer.write_scalars(int(config.total_steps), {
        'final/psnr_vs_teacher': pairs['vs_teacher_psnr'],
        'final/ssim_vs_teacher': pairs['vs_teacher_ssim'],
        **({'final/fid_student': out['quality_student']['fid'],
            'final/fid_teacher': out['quality_teacher']['fid']} if 'quality_student' in out else {})})
    gen_eval.write_grid(workdir, 'final_teacher_vs_student', int(config.total_steps),
                        gen_eval.interleave_rows([('teacher', t_imgs[:64]),
                                                  ('student', s_imgs[:64])], 16), writer)
    return out

  def export(state: DistillState) -> PyTree:
    # Only the student generator; adapters and the adversarial D stay in the training state.
    return {'generator': {'params': state.student.params['student'], **state.student.model_state}}

  if config.mode == 'data':
    batches = common.train_batches(config, train_src)
  else:
    batches = LatentOnlyBatches(config.data.batch_size // jax.process_count(), image_shape)
  task = loop.Task(
      init=init, step=step, teacher=teacher_tree, train_batches=batches, evaluate=evaluate,
      export=export, finalize=finalize,
      meta={'trainer': 'generator_distill', 'dataset': config.data.name,
            'image_shape': list(image_shape), 'mode': config.mode,
            'exported': {'generator': config_utils.to_dict(config.model)}})
  return loop.run(task, config, workdir, mesh)


def _frozen_outputs(who: str, logits: Array, feats: dict[str, Any]) -> dict[str, Any]:
  maps = [first(v) for _, v in sorted(feats.items())]
  out: dict[str, Any] = {f'frozen/{who}_logits': logits}
  if maps:
    out[f'frozen/{who}_features'] = maps
    last = maps[-1]
    out[f'frozen/{who}_embedding'] = (last.reshape(last.shape[0], -1, last.shape[-1]).mean(1)
                                      if last.ndim == 4 else last)
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
