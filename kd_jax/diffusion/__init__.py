"""Diffusion math shared by the denoiser model, the diffusion trainers and their tests.

`edm`: the EDM parameterization (Karras et al. 2022) every kd_jax denoiser and student shares;
`samplers`: deterministic Euler (= DDIM) / Heun samplers and consistency multistep sampling;
`targets`: the regression targets of progressive and consistency distillation.
Everything here is a pure function of arrays (a denoiser is passed in as a callable).
"""
