"""Fashion-MNIST diffusion teacher: an EDM-preconditioned U-Net denoiser (`edm_unet`, 16/32/64
channels at 28/14/7 px) trained with EDM's loss (ln σ ~ N(−1.2, 1.2²), λ(σ) weighting), sampled
with Heun's 2nd-order method (18 steps, 35 network evaluations), EMA 0.999.

Command:
  python launch.py --config configs/fashion_mnist/edm_teacher.py --workdir workdirs/fm_edm_teacher
Expected: README "Diffusion distillation" (measured FID-vs-NFE curve). `:tiny` runs in seconds.
"""
import ml_collections

from configs.fashion_mnist import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  mode = common.parse_arg(arg)
  tiny = mode == 'tiny'
  c = common.edm_base('teacher', dict(common.TINY_EDM_TEACHER if tiny
                                            else common.EDM_TEACHER))
  c.optimizer.update(dict(learning_rate=2e-3, schedule='cosine', warmup_steps=200))
  c.total_steps = 3000
  c.eval.steps = [18]  # Heun 18: the teacher's reference sampler
  if mode == 'demo':
    c.total_steps = 600
  if tiny:
    common.shrink_edm(c)
    c.eval.steps = [2]
  return c
