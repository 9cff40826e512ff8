"""Regression targets of step distillation, as pure functions of arrays.

progressive distillation (Salimans & Ho 2022, Alg. 2, written for the EDM/VE ODE where a DDIM
step is x_s = D + (σ_s/σ_t)(x_t − D)): two teacher DDIM steps σ_t → σ_m → σ_s give x″_s; the
student must reach it in one step, so its denoised output must be

  x̃ = (x″_s − (σ_s/σ_t)·x_t) / (1 − σ_s/σ_t)          (x̃ = x″_s when σ_s = 0).

consistency distillation (Song et al. 2023, Alg. 2): from x_{n+1} = x + σ_{n+1}·z, one teacher ODE
step (Heun) gives x̂_n at σ_n; the target is the EMA network's f_θ⁻(x̂_n, σ_n).

distribution matching (DMD, Yin et al. 2024a, eq. 7–8; DMD2, Yin et al. 2024b): for a one-step
generator's x = G(z), noise it to x_t = x + σ·n and compare the frozen teacher's ("real") and a
trained "fake" denoiser's x-predictions; the KL's gradient with respect to x is, in EDM terms
(scores s = (D(x_t) − x_t)/σ², the σ² folded into the normaliser),

  ∇ = (D_fake(x_t; σ) − D_real(x_t; σ)) / mean_{pixels} |x − D_real(x_t; σ)|

and the generator regresses onto the stop-gradient target x − ∇ (loss ½‖x − sg(x − ∇)‖²).
"""
from __future__ import annotations

import jax.numpy as jnp

from kd_jax.diffusion import samplers
from kd_jax.types import Array


def progressive_target(x_t: Array, x_s: Array, sigma_t: Array, sigma_s: Array) -> Array:
  """x̃: the denoised output whose single DDIM step σ_t → σ_s lands on the teacher's x″_s.

  Args:
    x_t: [B,H,W,C] the noisy input at σ_t; x_s: the teacher's two-step result at σ_s.
    sigma_t, sigma_s: [B] (or broadcastable) levels with σ_t > σ_s ≥ 0.
  """
  r = (sigma_s / sigma_t).reshape(-1, *([1] * (x_t.ndim - 1)))
  return (x_s - r * x_t) / (1.0 - r)


def dmd_target(x: Array, real_denoised: Array, fake_denoised: Array, eps: float = 1e-6
               ) -> Array:
  """x − ∇: DMD's regression target for the generator output x ([B,H,W,C] each).

  The per-example normaliser mean|x − D_real| makes the step size independent of how far the
  teacher's prediction is (DMD eq. 8); `eps` guards an exact match.
  """
  axes = tuple(range(1, x.ndim))
  norm = jnp.mean(jnp.abs(x - real_denoised), axis=axes, keepdims=True)
  return x - (fake_denoised - real_denoised) / (norm + eps)


def teacher_two_steps(denoise: samplers.Denoiser, x_t: Array, sigma_t: Array, sigma_m: Array,
                      sigma_s: Array) -> Array:
  """x″_s: two DDIM steps of `denoise` σ_t → σ_m → σ_s (each σ [B])."""
  bc = lambda s: s.reshape(-1, *([1] * (x_t.ndim - 1)))
  x_m = samplers.ddim_step(x_t, denoise(x_t, sigma_t), bc(sigma_t), bc(sigma_m))
  return samplers.ddim_step(x_m, denoise(x_m, sigma_m), bc(sigma_m), bc(sigma_s))


def heun_ode_step(denoise: samplers.Denoiser, x: Array, sigma: Array, sigma_next: Array) -> Array:
  """One Heun step of the PF-ODE between per-example levels σ → σ' > 0 ([B] each): x̂ of CD."""
  bc = lambda s: s.reshape(-1, *([1] * (x.ndim - 1)))
  d = (x - denoise(x, sigma)) / bc(sigma)
  x_e = x + bc(sigma_next - sigma) * d
  d2 = (x_e - denoise(x_e, sigma_next)) / bc(sigma_next)
  return x + bc(sigma_next - sigma) * 0.5 * (d + d2)
