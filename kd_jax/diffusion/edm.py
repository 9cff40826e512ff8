"""The EDM parameterization (Karras, Aittala, Aila, Laine 2022, "Elucidating the Design Space of
Diffusion-Based Generative Models"), shared by every kd_jax denoiser, teacher and student.

Why EDM: it is a variance-exploding ODE x_σ = x + σ·n whose probability-flow ODE
dx/dσ = (x − D(x; σ))/σ has Euler steps that are exactly DDIM (what progressive distillation
halves), and its preconditioned denoiser is what consistency models (Song et al. 2023) build their
boundary-respecting parameterization on. So one network body F serves the teacher, compressed
students, progressive students and consistency students; only the (parameter-free) output
scalings differ.

  D(x; σ) = c_skip(σ)·x + c_out(σ)·F(c_in(σ)·x, c_noise(σ))
  EDM:          c_skip = σ_d²/(σ²+σ_d²),          c_out = σ·σ_d/√(σ²+σ_d²)
  consistency:  c_skip = σ_d²/((σ−σ_min)²+σ_d²),  c_out = (σ−σ_min)·σ_d/√(σ²+σ_d²)
  both:         c_in = 1/√(σ²+σ_d²),              c_noise = ln(σ)/4
Training: ln σ ~ N(P_mean, P_std²) = N(−1.2, 1.2²), loss weight λ(σ) = (σ²+σ_d²)/(σ·σ_d)², so that
λ·c_out² = 1 (the network's effective target has unit variance at every σ).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from kd_jax.types import Array

SIGMA_DATA = 0.5   # images in [-1, 1]: EDM's value for CIFAR-10/ImageNet
SIGMA_MIN = 0.002
SIGMA_MAX = 80.0
RHO = 7.0
P_MEAN, P_STD = -1.2, 1.2
PRECONDITIONINGS = ('edm', 'consistency')


def scalings(sigma: Array, *, sigma_data: float = SIGMA_DATA, precond: str = 'edm',
             sigma_min: float = SIGMA_MIN) -> tuple[Array, Array, Array, Array]:
  """(c_skip, c_out, c_in, c_noise) at noise level `sigma` (any shape); see the module docstring.

  'consistency' satisfies the boundary condition f(x, σ_min) = x exactly (c_skip=1, c_out=0).
  """
  s2, sd2 = sigma ** 2, sigma_data ** 2
  c_in = jax.lax.rsqrt(s2 + sd2)
  c_noise = jnp.log(sigma) / 4.0
  if precond == 'edm':
    return sd2 / (s2 + sd2), sigma * sigma_data * c_in, c_in, c_noise
  if precond == 'consistency':
    d = sigma - sigma_min
    return sd2 / (d ** 2 + sd2), d * sigma_data * c_in, c_in, c_noise
  raise ValueError(f'precond={precond!r}; use one of {PRECONDITIONINGS}.')


def loss_weight(sigma: Array, sigma_data: float = SIGMA_DATA) -> Array:
  """λ(σ) = (σ² + σ_d²)/(σ·σ_d)² = 1/c_out(σ)² (EDM eq. 8 with Table 1's weighting)."""
  return (sigma ** 2 + sigma_data ** 2) / (sigma * sigma_data) ** 2


def training_sigmas(rng: Array, batch: int, p_mean: float = P_MEAN, p_std: float = P_STD) -> Array:
  """[batch] noise levels with ln σ ~ N(p_mean, p_std²) (EDM's training distribution)."""
  return jnp.exp(p_mean + p_std * jax.random.normal(rng, (batch,)))


def karras_position(t: Array, sigma_min: float = SIGMA_MIN, sigma_max: float = SIGMA_MAX,
                    rho: float = RHO) -> Array:
  """σ(t) = (σ_max^(1/ρ) + t·(σ_min^(1/ρ) − σ_max^(1/ρ)))^ρ for t ∈ [0, 1] (EDM eq. 5)."""
  lo, hi = sigma_min ** (1.0 / rho), sigma_max ** (1.0 / rho)
  return (hi + t * (lo - hi)) ** rho


def step_sigmas(steps: int, sigma_min: float = SIGMA_MIN, sigma_max: float = SIGMA_MAX,
                rho: float = RHO) -> Array:
  """The [steps + 1] noise levels of a `steps`-step sampler: σ(i/steps), i < steps, then 0.

  Nested by construction: the grid of steps/2 is every other level of the grid of `steps`, which is
  what progressive distillation needs (one student step = two teacher steps). EDM's own grid puts
  σ_min at i = steps − 1 instead; here the last non-zero level is σ((steps−1)/steps) > σ_min, and
  the final step to 0 is a plain denoise either way.
  """
  if not isinstance(steps, int) or steps < 1:
    raise ValueError(f'steps={steps!r} must be an int >= 1.')
  t = jnp.arange(steps, dtype=jnp.float32) / steps
  return jnp.concatenate([karras_position(t, sigma_min, sigma_max, rho), jnp.zeros((1,))])


def discretization(n: int, sigma_min: float = SIGMA_MIN, sigma_max: float = SIGMA_MAX,
                   rho: float = RHO) -> Array:
  """[n] increasing levels σ_1 = σ_min < … < σ_n = σ_max (consistency models' N-point grid, EDM
  spacing; Song et al. 2023 use N = 18 for CIFAR-10 consistency distillation)."""
  if not isinstance(n, int) or n < 2:
    raise ValueError(f'n={n!r} must be an int >= 2.')
  t = jnp.arange(n, dtype=jnp.float32) / (n - 1)
  return karras_position(1.0 - t, sigma_min, sigma_max, rho)
