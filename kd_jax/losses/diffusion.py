"""Diffusion losses: the per-noise-level weighted denoising regression every diffusion trainer uses.

The trainer builds `student_images` = D_s(x_σ; σ), the regression target `target_images` (clean
data for a teacher; the teacher's D_t(x_σ; σ) for a compressed student; progressive distillation's
x̃; the EMA network's output for consistency distillation) and `loss_weight` = the per-example
weight λ(σ) of its objective (`kd_jax.diffusion.edm.loss_weight`, or 1).
"""
from __future__ import annotations

from kd_jax.losses import _utils
from kd_jax.types import Array


def weighted_l2(student_images: Array, target_images: Array, loss_weight: Array) -> Array:
  r"""Per-example weighted squared error of a denoiser's output against its target.

  .. math:: \ell(b) = \lambda_b \cdot \frac{1}{D} \sum_i (D_s(x_b; \sigma_b)_i - y_{b,i})^2

  With y = clean data and λ(σ) = (σ²+σ_d²)/(σσ_d)² this is EDM's training loss (Karras et al. 2022,
  eq. 2 and Table 1); with y = the teacher's denoised output it is output-level KD for a compressed
  denoiser (BK-SDM, Kim et al. 2023, "out-KD"); with y = x̃ it is progressive distillation's loss
  (Salimans & Ho 2022, Alg. 2); with λ = 1 and y = f_θ⁻(x̂_n, σ_n) it is consistency distillation's
  squared-ℓ2 metric (Song et al. 2023, Alg. 2). The mean over pixels (not the sum) keeps the scale
  independent of resolution.

  Args:
    student_images, target_images: [B, ...] of one shape; loss_weight: [B].

  Example:
    >>> weighted_l2(jnp.ones([2, 4]), jnp.zeros([2, 4]), jnp.array([1., 3.]))
    Array([1., 3.], dtype=float32)
  """
  err = _utils.mean_squared_error('weighted_l2', student_images, target_images)
  return err * _utils.as_float(loss_weight).reshape(err.shape)
