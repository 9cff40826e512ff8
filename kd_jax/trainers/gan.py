"""GAN training (teachers, and scratch students for comparison): G, G_ema and D in one state.

Recipe (StyleGAN2-style): non-saturating logistic loss, R1 penalty on real images with weight γ/2,
EMA of generator weights, Adam with GAN betas. Checkpoints hold G, G_ema and D; the export holds
`generator` (G_ema, what a distillation run restores as its teacher) and `discriminator`.
"""
from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from kd_jax import config_utils, errors, models, optim, parallel
from kd_jax.data import augment
from kd_jax.train_state import TrainState, step_key
from kd_jax.trainers import common, gan_parts, gen_eval, loop
from kd_jax.types import Array, Batch, PyTree


@flax.struct.dataclass
class GANState:
  g: TrainState
  d: TrainState
  g_ema: PyTree  # {'params': ..., **model_state}: the generator that is evaluated and exported


def default_config() -> ml_collections.ConfigDict:
  """Every field a GAN config may set."""
  c = ml_collections.ConfigDict()
  c.trainer = 'gan'
  c.seed = 0
  c.data = ml_collections.ConfigDict(dict(
      name='fashion_mnist', data_dir='', batch_size=64, cache_in_memory=True, train_split='train',
      eval_split='test'))
  c.generator = {'name': 'dcgan_generator', 'latent_dim': 64}
  c.discriminator = {'name': 'dcgan_discriminator'}
  c.conditional = False
  c.g_optimizer = optim.default_optimizer_config()
  c.g_optimizer.update(dict(name='adam', learning_rate=2e-4, schedule='constant', b1=0.0, b2=0.99))
  c.d_optimizer = optim.default_optimizer_config()
  c.d_optimizer.update(dict(name='adam', learning_rate=2e-4, schedule='constant', b1=0.0, b2=0.99))
  c.r1_gamma = 1.0
  c.ema_decay = 0.999
  c.eval = default_eval_config()
  c.total_steps = 2000
  c.log_every = 100
  c.eval_every = 500
  c.checkpoint_every = 500
  c.keep_checkpoints = 2
  return c


def default_eval_config() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(
      num_samples=10000, batch_size=500, classifier_checkpoint='', feature_layer='features',
      feature_fn='', grid_size=64, seed=1234))


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains a GAN on `config.data`; writes sample grids, FID/KID/PR (if a classifier is given)."""
  run = common.prepare(config, default_config(), workdir, with_eval=False)
  gen_eval.check_feature_fn(config.eval)  # a bad import fails now, not after training
  mesh, train_src, image_shape = run.mesh, run.train_source, run.image_shape
  zdim = gan_parts.latent_dim(config.generator, 'config.generator')
  g_name, g_kwargs = config_utils.model_kwargs(config.generator, 'config.generator')
  d_name, d_kwargs = config_utils.model_kwargs(config.discriminator, 'config.discriminator')
  G, D = models.get(g_name, **g_kwargs), models.get(d_name, **d_kwargs)
  num_classes = int(config_utils.to_dict(config.generator).get('num_classes', 0) or 0)
  if config.conditional and not num_classes:
    raise errors.ConfigError('config.conditional=True needs config.generator.num_classes (and '
                             'config.discriminator.num_classes) set, e.g. 10.')
  g_tx = optim.make_optimizer(config.g_optimizer, config.total_steps)
  d_tx = optim.make_optimizer(config.d_optimizer, config.total_steps)
  z0 = jnp.zeros((1, zdim), jnp.float32)
  x0 = jnp.zeros((1, *image_shape), jnp.float32)
  y0 = jnp.zeros((1,), jnp.int32) if config.conditional else None

  def init(rng: Array) -> GANState:
    g_vars = G.init({'params': rng, 'noise': rng}, z0, y0, train=False)
    d_vars = D.init(jax.random.fold_in(rng, 1), x0, y0, train=False)
    g_ms = {k: v for k, v in g_vars.items() if k != 'params'}
    g = TrainState.create(params=g_vars['params'], model_state=g_ms, tx=g_tx)
    d = TrainState.create(params=d_vars['params'], model_state={}, tx=d_tx)
    return GANState(g=g, d=d, g_ema={'params': g_vars['params'], **g_ms})

  def step(state: GANState, teacher: PyTree, batch: Batch, rng: Array):
    del teacher
    real = augment.normalize(batch['image'])
    labels = batch['label'] if config.conditional else None
    b = real.shape[0]
    t = state.g.step
    k_lat, k_noise = step_key(rng, t, 'latent'), step_key(rng, t, 'noise')
    g_vars = {'params': state.g.params, **state.g.model_state}
    fake, _ = gan_parts.generate(G, g_vars, gan_parts.sample_latents(k_lat, b, zdim), labels,
                                 noise_rng=k_noise, train=True, mutable=list(state.g.model_state))
    d, d_metrics = gan_parts.d_update(state.d, D, real, jax.lax.stop_gradient(fake), labels,
                                      r1_gamma=config.r1_gamma)
    z2 = gan_parts.sample_latents(jax.random.fold_in(k_lat, 1), b, zdim)
    y2 = (gan_parts.sample_labels(jax.random.fold_in(k_lat, 2), b, num_classes)
          if config.conditional else None)

    def g_loss_fn(params):
      out, new_ms = gan_parts.generate(G, {'params': params, **state.g.model_state}, z2, y2,
                                       noise_rng=jax.random.fold_in(k_noise, 1), train=True,
                                       mutable=list(state.g.model_state))
      logits = D.apply({'params': d.params}, out, y2, train=True)
      return jnp.mean(gan_parts.generator_loss(logits)), new_ms

    (g_loss, new_ms), grads = jax.value_and_grad(g_loss_fn, has_aux=True)(state.g.params)
    g = state.g.apply_gradients(grads, dict(new_ms))
    # EMA warm-up (the num_updates rule of tf.train.ExponentialMovingAverage): early on the
    # average would otherwise be dominated by the random initial weights for ~1/(1-decay) steps.
    decay = jnp.minimum(config.ema_decay, (1.0 + t) / (10.0 + t))
    g_ema = {'params': gan_parts.ema(state.g_ema['params'], g.params, decay), **g.model_state}
    return GANState(g=g, d=d, g_ema=g_ema), {'g_loss': g_loss, **d_metrics}

  # Fixed latents for grids so training progression is comparable across steps.
  ek = jax.random.key(config.eval.seed)
  grid_z = gan_parts.sample_latents(ek, config.eval.grid_size, zdim)
  grid_y = (jnp.arange(config.eval.grid_size, dtype=jnp.int32) % max(num_classes, 1)
            if config.conditional else None)
  sample = jax.jit(lambda v, z, y: G.apply(v, z, y, train=False))

  def evaluate(state: GANState, step_: int, writer: Any) -> dict[str, float]:
    g_ema = parallel.fetch(state.g_ema)
    imgs = np.asarray(sample(g_ema, grid_z, grid_y))
    gen_eval.write_grid(workdir, 'samples', step_, [('G_ema', imgs)], writer)
    return {}

  def finalize(state: GANState, writer: Any) -> dict[str, Any]:
    g_ema = parallel.fetch(state.g_ema)
    d_vars = {'params': parallel.fetch(state.d.params)}
    out: dict[str, Any] = {
        'generator': {'model': config_utils.to_dict(config.generator),
                      **gen_eval.cost_report(lambda v, z: G.apply(v, z, None, train=False),
                                             g_ema, z0)},
        'discriminator': {'model': config_utils.to_dict(config.discriminator),
                          'params': int(gen_eval.cost.param_count(d_vars['params']))}}
    if gen_eval.has_feature_extractor(config.eval):
      out['quality'] = generator_quality(
          lambda z, y: sample(g_ema, z, y), config, train_src, image_shape, zdim,
          num_classes if config.conditional else 0)
      writer.write_scalars(int(config.total_steps), {
          f'quality/{k}': v for k, v in out['quality'].items() if isinstance(v, float)})
    return out

  def export(state: GANState) -> PyTree:
    return {'generator': state.g_ema, 'discriminator': {'params': state.d.params}}

  task = loop.Task(
      init=init, step=step, teacher=None,
      train_batches=common.train_batches(config, train_src),
      evaluate=evaluate, export=export, finalize=finalize,
      meta={'trainer': 'gan', 'dataset': config.data.name, 'image_shape': list(image_shape),
            'exported': {'generator': config_utils.to_dict(config.generator),
                         'discriminator': config_utils.to_dict(config.discriminator)}})
  return loop.run(task, config, workdir, mesh)


def generator_quality(sample_fn: Any, config: ml_collections.ConfigDict, source: Any,
                      image_shape: tuple[int, ...], zdim: int, num_classes: int) -> dict[str, Any]:
  """FID/KID/PR/diversity of `config.eval.num_samples` samples vs as many real training images.

  `num_classes` > 0 samples class labels uniformly for a conditional generator.
  """
  feat_fn, name = gen_eval.feature_extractor(config.eval, image_shape)
  n, bs = int(config.eval.num_samples), int(config.eval.batch_size)
  key = jax.random.key(config.eval.seed + 1)
  z = np.asarray(gan_parts.sample_latents(key, n, zdim))
  y = (np.asarray(gan_parts.sample_labels(jax.random.fold_in(key, 1), n, num_classes))
       if num_classes else None)
  fake = gen_eval.batched(lambda zz, yy: feat_fn(sample_fn(zz, yy)), n, bs,
                          lambda s, k: z[s:s + k], lambda s, k: None if y is None else y[s:s + k])
  real = gen_eval.real_images(source, n)
  real_f = gen_eval.batched(feat_fn, len(real), bs, lambda s, k: real[s:s + k])
  return gen_eval.quality_report(fake, real_f, name, seed=config.eval.seed)
