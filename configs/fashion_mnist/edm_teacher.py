"""Fashion-MNIST diffusion teacher: an EDM-preconditioned U-Net denoiser (`edm_unet`, 16/32/64
channels at 28/14/7 px) trained with EDM's loss (ln σ ~ N(−1.2, 1.2²), λ(σ) weighting), sampled
with Heun's 2nd-order method (18 steps, 35 network evaluations), EMA 0.999.

Command:
  python launch.py --config configs/fashion_mnist/edm_teacher.py --workdir workdirs/fm_edm_teacher \
      --config.eval.classifier_checkpoint=pretrained:fashion_mnist/classifier
Expected: README "Diffusion distillation" (measured FID-vs-NFE curve). `:tiny` runs in seconds.
"""
import ml_collections

from configs.fashion_mnist import common
from kd_jax.trainers import diffusion


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  mode = common.parse_arg(arg)
  tiny = mode == 'tiny'
  c = diffusion.default_config()
  c.mode = 'teacher'
  c.model = dict(common.TINY_EDM_TEACHER if tiny else common.EDM_TEACHER)
  c.optimizer.update(dict(learning_rate=2e-3, schedule='cosine', warmup_steps=200))
  c.data.batch_size = 128
  c.total_steps = 3000
  c.checkpoint_every = 500
  c.eval.classifier_checkpoint = 'pretrained:fashion_mnist/classifier'
  # The FID-vs-NFE curve of the teacher: Heun 18 (its reference) and Euler at the students' counts.
  c.eval.steps = [18]
  c.eval.teacher_steps = []
  if mode == 'demo':
    c.total_steps = 600
  if tiny:
    common.shrink_generative(c)
    c.optimizer.warmup_steps = 0
    c.eval.steps = [2]
    c.eval.reference_steps = 2
  return c
