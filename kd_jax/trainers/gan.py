"""GAN training (teachers, and scratch students for comparison): G, G_ema and D in one state.

Recipe (StyleGAN2-style): non-saturating logistic loss, R1 penalty on real images with weight γ/2,
EMA of generator weights, Adam with GAN betas. Checkpoints hold G, G_ema and D; the export holds
`generator` (G_ema, what a distillation run restores as its teacher) and `discriminator`.
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
import numpy as np

from kd_jax import config_utils, errors, optim, parallel
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
  c = loop.default_config(trainer='gan', total_steps=2000, eval_every=500)
  c.data = common.data_config(batch_size=64)
  c.generator = {'name': 'dcgan_generator', 'latent_dim': 64}
  c.discriminator = {'name': 'dcgan_discriminator'}
  c.conditional = False
  c.g_optimizer = optim.default_optimizer_config()
  c.g_optimizer.update(dict(name='adam', learning_rate=2e-4, schedule='constant', b1=0.0, b2=0.99))
  c.d_optimizer = optim.default_optimizer_config()
  c.d_optimizer.update(dict(name='adam', learning_rate=2e-4, schedule='constant', b1=0.0, b2=0.99))
  c.r1_gamma = 1.0
  c.r1_every = 1       # > 1: lazy R1 (StyleGAN2 uses 16)
  c.ema_decay = 0.999
  c.eval = default_eval_config()
  return c


def default_eval_config() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(
      num_samples=10000, batch_size=500, classifier_checkpoint='', feature_layer='features',
      # > 0: images are centre-cropped to this size before the classifier (data.pad_to undone).
      feature_crop=0,
      feature_fn='', grid_size=64, seed=1234))


@dataclasses.dataclass(frozen=True, eq=False)
class Spec:
  generator: nn.Module
  discriminator: nn.Module
  latent_dim: int
  num_classes: int = 0     # > 0: a conditional GAN
  r1_gamma: float = 1.0
  ema_decay: float = 0.999
  r1_every: int = 1


def train_step(state: GANState, teacher: PyTree, batch: Batch, rng: Array, *, spec: Spec
               ) -> tuple[GANState, dict[str, Array]]:
  """One D step (logistic loss + γ/2·R1) on real vs G(z), then one G step, then the EMA of G."""
  del teacher
  G, D = spec.generator, spec.discriminator
  real = augment.normalize(batch['image'])
  labels = batch['label'] if spec.num_classes else None
  b, t = real.shape[0], state.g.step
  k_lat, k_noise = step_key(rng, t, 'latent'), step_key(rng, t, 'noise')
  g_vars = {'params': state.g.params, **state.g.model_state}
  fake, _ = gan_parts.generate(G, g_vars, gan_parts.sample_latents(k_lat, b, spec.latent_dim),
                               labels, noise_rng=k_noise, train=True,
                               mutable=list(state.g.model_state))
  d, d_metrics = gan_parts.d_update(state.d, D, real, jax.lax.stop_gradient(fake), labels,
                                    r1_gamma=spec.r1_gamma, r1_every=spec.r1_every)
  z2 = gan_parts.sample_latents(jax.random.fold_in(k_lat, 1), b, spec.latent_dim)
  y2 = (gan_parts.sample_labels(jax.random.fold_in(k_lat, 2), b, spec.num_classes)
        if spec.num_classes else None)

  def g_loss_fn(params):
    out, new_ms = gan_parts.generate(G, {'params': params, **state.g.model_state}, z2, y2,
                                     noise_rng=jax.random.fold_in(k_noise, 1), train=True,
                                     mutable=list(state.g.model_state))
    logits = D.apply({'params': d.params, **d.model_state}, out, y2, train=True)
    return jnp.mean(gan_parts.generator_loss(logits)), new_ms

  (g_loss, new_ms), grads = jax.value_and_grad(g_loss_fn, has_aux=True)(state.g.params)
  g = state.g.apply_gradients(grads, dict(new_ms))
  # EMA warm-up (the num_updates rule of tf.train.ExponentialMovingAverage): early on the
  # average would otherwise be dominated by the random initial weights for ~1/(1-decay) steps.
  decay = jnp.minimum(spec.ema_decay, (1.0 + t) / (10.0 + t))
  g_ema = {'params': gan_parts.ema(state.g_ema['params'], g.params, decay), **g.model_state}
  return GANState(g=g, d=d, g_ema=g_ema), {'g_loss': g_loss, **d_metrics}


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains a GAN on `config.data`; writes sample grids, FID/KID/PR (if a classifier is given)."""
  run = common.prepare(config, default_config(), workdir, with_eval=False)
  gen_eval.check_feature_fn(config.eval.feature_fn)  # a bad import fails now, not after training
  zdim = gan_parts.latent_dim(config.generator, 'config.generator')
  num_classes = gan_parts.num_classes(config.generator)
  if config.conditional and not num_classes:
    raise errors.ConfigError('config.conditional=True needs config.generator.num_classes (and '
                             'config.discriminator.num_classes) set, e.g. 10.')
  spec = Spec(config_utils.build_model(config.generator, 'config.generator'),
              config_utils.build_model(config.discriminator, 'config.discriminator'), zdim,
              num_classes if config.conditional else 0, float(config.r1_gamma),
              float(config.ema_decay), int(config.r1_every))
  if spec.r1_every < 1:
    raise errors.ConfigError(f'config.r1_every={config.r1_every} must be ≥ 1 (1: R1 every D step; '
                             'StyleGAN2 uses 16).')
  g_tx = optim.make_optimizer(config.g_optimizer, config.total_steps,
                              'config.g_optimizer')
  d_tx = optim.make_optimizer(config.d_optimizer, config.total_steps,
                              'config.d_optimizer')
  z0 = jnp.zeros((1, zdim), jnp.float32)
  x0 = jnp.zeros((1, *run.image_shape), jnp.float32)
  y0 = jnp.zeros((1,), jnp.int32) if config.conditional else None

  def init(rng: Array) -> GANState:
    g_vars = spec.generator.init({'params': rng, 'noise': rng}, z0, y0, train=False)
    d_vars = spec.discriminator.init(jax.random.fold_in(rng, 1), x0, y0, train=False)
    g_ms = {k: v for k, v in g_vars.items() if k != 'params'}
    g = TrainState.create(params=g_vars['params'], model_state=g_ms, tx=g_tx)
    d = TrainState.create(params=d_vars['params'],
                          model_state={k: v for k, v in d_vars.items() if k != 'params'}, tx=d_tx)
    return GANState(g=g, d=d, g_ema={'params': g_vars['params'], **g_ms})

  evaluation = _Evaluation(config, workdir, run, spec)
  task = loop.Task(
      init=init, step=functools.partial(train_step, spec=spec), teacher=None,
      train_batches=common.train_batches(config, run.train_source),
      evaluate=evaluation.evaluate, export=export, finalize=evaluation.finalize,
      meta={'trainer': 'gan', 'dataset': config.data.name, 'image_shape': list(run.image_shape),
            'exported': {'generator': config_utils.to_dict(config.generator),
                         'discriminator': config_utils.to_dict(config.discriminator)}})
  return loop.run(task, loop.Settings.from_config(config), workdir, run.mesh)


def export(state: GANState) -> PyTree:
  """G_ema (what a distillation run restores as its teacher) and D (a frozen critic for one)."""
  return {'generator': state.g_ema,
          'discriminator': {'params': state.d.params, **state.d.model_state}}


class _Evaluation:
  """Sample grids from fixed latents (comparable across steps); cost and FID/KID/PR at the end."""

  def __init__(self, config: ml_collections.ConfigDict, workdir: str, run: Any, spec: Spec):
    ev = config.eval
    self._workdir, self._run, self._spec, self._step = workdir, run, spec, int(config.total_steps)
    self._eval = dict(num_samples=int(ev.num_samples), batch=int(ev.batch_size), seed=int(ev.seed))
    self._extractor_args = (ev.feature_fn, ev.classifier_checkpoint, ev.feature_layer,
                           int(ev.feature_crop))
    self._configs = {'generator': config_utils.to_dict(config.generator),
                     'discriminator': config_utils.to_dict(config.discriminator)}
    self._grid_z = gan_parts.sample_latents(jax.random.key(ev.seed), ev.grid_size, spec.latent_dim)
    self._grid_y = (jnp.arange(ev.grid_size, dtype=jnp.int32) % spec.num_classes
                    if spec.num_classes else None)
    self._sample = jax.jit(lambda v, z, y: spec.generator.apply(v, z, y, train=False))

  def evaluate(self, state: GANState, step: int, writer: Any) -> dict[str, float]:
    imgs = np.asarray(self._sample(parallel.fetch(state.g_ema), self._grid_z, self._grid_y))
    gen_eval.write_grid(self._workdir, 'samples', step, [('G_ema', imgs)], writer)
    return {}

  def finalize(self, state: GANState, writer: Any) -> dict[str, Any]:
    g_ema = parallel.fetch(state.g_ema)
    z0 = jnp.zeros((1, self._spec.latent_dim), jnp.float32)
    G = self._spec.generator
    out: dict[str, Any] = {
        'generator': {'model': self._configs['generator'],
                      **gen_eval.cost_report(lambda v, z: G.apply(v, z, None, train=False),
                                             g_ema, z0)},
        'discriminator': {'model': self._configs['discriminator'],
                          'params': int(gen_eval.cost.param_count(parallel.fetch(state.d.params)))}}
    extractor = gen_eval.feature_extractor(*self._extractor_args, self._run.image_shape)
    if extractor is not None:
      out['quality'] = gen_eval.generator_quality(
          lambda z, y: self._sample(g_ema, z, y), extractor, self._run.train_source,
          latent_dim=self._spec.latent_dim, num_classes=self._spec.num_classes, **self._eval)
      writer.write_scalars(self._step, {
          f'quality/{k}': v for k, v in out['quality'].items() if isinstance(v, float)})
    return out
