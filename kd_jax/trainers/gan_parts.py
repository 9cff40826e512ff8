"""Pieces shared by the GAN teacher trainer and the generator-distillation trainer.

Non-saturating logistic GAN loss (Goodfellow et al. 2014), R1 gradient penalty on real data
(Mescheder et al. 2018, "Which training methods for GANs do actually converge?"), and an EMA of the
generator weights (Karras et al. 2018) — the StyleGAN2 recipe.
"""
from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from kd_jax import config_utils, errors, losses
from kd_jax.types import Array, PyTree


# The size of z and the number of classes under kd_jax's names, or the official StyleGAN2-ADA ones.
_LATENT_KEYS = ('latent_dim', 'z_dim')
_CLASS_KEYS = ('num_classes', 'c_dim')


def latent_dim(generator_cfg: Any, field: str) -> int:
  cfg = config_utils.to_dict(generator_cfg)
  for key in _LATENT_KEYS:
    if key in cfg:
      return int(cfg[key])
  raise errors.ConfigError(f"{field} needs 'latent_dim' (the size of z; 'z_dim' for "
                           f"stylegan2_ada_generator), e.g. {field}.latent_dim=64.")


def num_classes(generator_cfg: Any) -> int:
  """The generator's class count (0: unconditional), from 'num_classes' or 'c_dim'."""
  cfg = config_utils.to_dict(generator_cfg)
  return next((int(cfg[k] or 0) for k in _CLASS_KEYS if k in cfg), 0)


def sample_latents(rng: Array, batch: int, dim: int) -> Array:
  return jax.random.normal(rng, (batch, dim), jnp.float32)


def sample_labels(rng: Array, batch: int, num_classes: int) -> Array:
  return jax.random.randint(rng, (batch,), 0, num_classes, jnp.int32)


def generate(module: nn.Module, variables: PyTree, z: Array, labels: Array | None, *,
             noise_rng: Array | None, train: bool = False,
             mutable: list[str] | bool = False) -> Any:
  """Runs a generator; `noise_rng` feeds per-layer noise (StyleGAN2) and is ignored by others."""
  rngs = {'noise': noise_rng} if noise_rng is not None else None
  return module.apply(variables, z, labels, train=train, rngs=rngs, mutable=mutable)


def r1_penalty(d_apply: Callable[[Array], Array], real: Array) -> Array:
  """Per-example ‖∇ₓ D(x)‖² at real images (multiply by γ/2 for the R1 term)."""
  grads = jax.grad(lambda x: jnp.sum(d_apply(x)))(real)
  return jnp.sum(jnp.square(grads).reshape(grads.shape[0], -1), axis=-1)


def discriminator_loss(real_logits: Array, fake_logits: Array) -> Array:
  """Per-example `softplus(-D(real)) + softplus(D(fake))` from the loss registry."""
  return losses.get('gan_ns_d').fn(real_logits, fake_logits)


def generator_loss(fake_logits: Array) -> Array:
  """Per-example non-saturating `softplus(-D(G(z)))` from the loss registry."""
  return losses.get('gan_ns_g').fn(fake_logits)


def ema(average: PyTree, new: PyTree, decay: float | Array) -> PyTree:
  return jax.tree.map(lambda a, n: decay * a + (1.0 - decay) * n, average, new)


def d_update(d_state: Any, d_module: nn.Module, real: Array, fake: Array, labels: Array | None, *,
             r1_gamma: float, r1_every: int = 1) -> tuple[Any, dict[str, Array]]:
  """One discriminator step: logistic loss on (real, fake) plus γ/2·R1 on real.

  r1_every > 1 is StyleGAN2's lazy regularization (Karras et al. 2020, §3.1): R1 only on every
  r1_every-th D step, weighted by r1_every so its average strength is unchanged. R1 needs a double
  backward pass, the dearest part of a StyleGAN2 step.
  """

  def loss_fn(params):
    # model_state: non-trained collections (the StyleGAN2-ADA D's resample-filter buffers).
    apply = lambda x: d_module.apply({'params': params, **d_state.model_state}, x, labels,
                                     train=True)
    real_logits, fake_logits = apply(real), apply(fake)
    adv = jnp.mean(discriminator_loss(real_logits, fake_logits))
    if not r1_gamma:
      r1 = jnp.zeros(())
    elif r1_every == 1:
      r1 = jnp.mean(r1_penalty(apply, real))
    else:
      # lax.cond runs only the taken branch, so the other steps skip the double backward.
      r1 = jax.lax.cond(d_state.step % r1_every == 0,
                        lambda: jnp.mean(r1_penalty(apply, real)) * r1_every,
                        lambda: jnp.zeros((), real.dtype))
    return adv + 0.5 * r1_gamma * r1, (adv, r1, real_logits, fake_logits)

  (total, (adv, r1, rl, fl)), grads = jax.value_and_grad(loss_fn, has_aux=True)(d_state.params)
  new = d_state.apply_gradients(grads, d_state.model_state)
  return new, {'d_loss': adv, 'r1': r1, 'd_real': jnp.mean(rl), 'd_fake': jnp.mean(fl),
               'd_total': total}
