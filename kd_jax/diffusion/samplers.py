"""Deterministic samplers of the EDM probability-flow ODE dx/dσ = (x − D(x; σ))/σ, and consistency
multistep sampling. A denoiser is any `denoise(x [B,H,W,C], sigma [B]) -> D(x; σ)`.

  euler  one D per step: x' = D + (σ'/σ)(x − D). This is DDIM (Song et al. 2021) written in σ;
         NFE = steps. Progressive distillation's teacher and students sample with it.
  heun   EDM's Algorithm 1 without churn: an Euler step then the trapezoidal correction, except on
         the last step to σ = 0; NFE = 2·steps − 1.
All loops are `lax.scan` over a fixed grid, so a sampler is one jitted program per step count.
"""
from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp

from kd_jax.diffusion import edm
from kd_jax.types import Array

Denoiser = Callable[[Array, Array], Array]
SAMPLERS = ('euler', 'heun')


def _sigma_batch(sigma: Array, x: Array) -> Array:
  return jnp.full((x.shape[0],), sigma, x.dtype)


def ddim_step(x: Array, denoised: Array, sigma: Array, sigma_next: Array) -> Array:
  """One Euler (= DDIM) step from σ to σ': D + (σ'/σ)·(x − D); σ, σ' broadcast over x."""
  return denoised + (sigma_next / sigma) * (x - denoised)


def euler(denoise: Denoiser, x: Array, sigmas: Array) -> Array:
  """Euler/DDIM from x at sigmas[0] down the grid `sigmas` (ending at 0)."""
  def body(x, pair):
    s, s_next = pair
    return ddim_step(x, denoise(x, _sigma_batch(s, x)), s, s_next), None
  x, _ = jax.lax.scan(body, x, (sigmas[:-1], sigmas[1:]))
  return x


def heun_step(denoise: Denoiser, x: Array, sigma: Array, sigma_next: Array) -> Array:
  """One Heun step σ → σ' > 0 (EDM Alg. 1, lines 5–8): Euler, then the average of both slopes."""
  d = (x - denoise(x, _sigma_batch(sigma, x))) / sigma
  x_e = x + (sigma_next - sigma) * d
  d2 = (x_e - denoise(x_e, _sigma_batch(sigma_next, x))) / sigma_next
  return x + (sigma_next - sigma) * 0.5 * (d + d2)


def heun(denoise: Denoiser, x: Array, sigmas: Array) -> Array:
  """Heun down `sigmas`; the last step (to σ = 0) is Euler, so NFE = 2·(len(sigmas) − 1) − 1."""
  def body(x, pair):
    s, s_next = pair
    return heun_step(denoise, x, s, s_next), None
  x, _ = jax.lax.scan(body, x, (sigmas[:-2], sigmas[1:-1]))
  return ddim_step(x, denoise(x, _sigma_batch(sigmas[-2], x)), sigmas[-2], sigmas[-1])


def nfe(sampler: str, steps: int) -> int:
  """Network evaluations per image of `sampler` with `steps` steps."""
  check_sampler(sampler)
  return steps if sampler == 'euler' or steps == 1 else 2 * steps - 1


def check_sampler(sampler: str) -> None:
  if sampler not in SAMPLERS:
    raise ValueError(f'sampler={sampler!r}; use one of {SAMPLERS}.')


def sample(denoise: Denoiser, noise: Array, steps: int, sampler: str = 'heun',
           sigma_min: float = edm.SIGMA_MIN, sigma_max: float = edm.SIGMA_MAX,
           rho: float = edm.RHO) -> Array:
  """Images from standard-normal `noise` [B,H,W,C]: x = σ_max·noise, then `steps` sampler steps on
  `edm.step_sigmas(steps)`. Deterministic: the same noise gives the same images."""
  check_sampler(sampler)
  sigmas = edm.step_sigmas(steps, sigma_min, sigma_max, rho)
  x = noise * sigmas[0]
  return (euler if sampler == 'euler' or steps == 1 else heun)(denoise, x, sigmas)


def consistency_sample(f: Denoiser, noise: Array, rng: Array, sigmas: Sequence[float] = (),
                       sigma_min: float = edm.SIGMA_MIN, sigma_max: float = edm.SIGMA_MAX
                       ) -> Array:
  """Consistency multistep sampling (Song et al. 2023, Alg. 1): x = f(σ_max·z, σ_max), then for
  each σ in `sigmas` (decreasing): x = f(x + √(σ² − σ_min²)·z', σ). NFE = 1 + len(sigmas); `rng`
  draws the fresh noise z' (fixed rng: deterministic)."""
  x = f(noise * sigma_max, _sigma_batch(sigma_max, noise))
  for i, s in enumerate(sigmas):
    z = jax.random.normal(jax.random.fold_in(rng, i), noise.shape, noise.dtype)
    x = f(x + jnp.sqrt(s ** 2 - sigma_min ** 2) * z, _sigma_batch(s, noise))
  return x
