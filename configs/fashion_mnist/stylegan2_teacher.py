"""Fashion-MNIST StyleGAN2-ADA teacher: NVIDIA's architecture (`stylegan2_ada_generator` and
`_discriminator`, the modules an official snapshot imports into) at 32 px, trained here with the
StyleGAN2 recipe of the GAN trainer (non-saturating logistic loss, lazy R1, G EMA, Adam β=(0, 0.99))
at the hyper-parameters of StyleGAN2-ADA's `--cfg=auto` for 32 px and batch 32: lr 2.5e-3,
γ = 0.0002·res²/batch = 0.0064, EMA half-life 10k images (decay 0.5^(32/10⁴)). Fashion-MNIST is
zero-padded to 32 px; FID/KID/PR are on the central 28 px.

Command (the shipped `pretrained:fashion_mnist/stylegan2` is this run, scored with the shipped
classifier, trained as `workdirs/fm_teacher_demo`):
  python launch.py --config configs/fashion_mnist/stylegan2_teacher.py \
      --workdir workdirs/fm_sg2_teacher --config.eval.classifier_checkpoint=workdirs/fm_teacher_demo
Expected: README "StyleGAN2 distillation" (measured). `:tiny` runs in seconds; `:demo` is short.
"""
import ml_collections

from configs.fashion_mnist import common
from kd_jax.trainers import gan


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  mode = common.parse_arg(arg)
  tiny = mode == 'tiny'
  c = gan.default_config()
  c.generator = dict(common.TINY_SG2_TEACHER if tiny else common.SG2_TEACHER)
  c.discriminator = dict(common.TINY_SG2_DISCRIMINATOR if tiny else common.SG2_DISCRIMINATOR)
  c.data.batch_size = 32
  c.r1_every = 16  # lazy R1, as in StyleGAN2
  # StyleGAN2-ADA's auto config (train.py, cfg_specs['auto']) at res 32 and batch 32. The first
  # teacher used lr 2e-4 and γ=1: with the mapping's lr multiplier of 0.01 its mapping barely moved,
  # and γ=1 is ~150× the auto value; it reached FID 26.5 with precision 0.34 and recall 0.24.
  c.g_optimizer.learning_rate = c.d_optimizer.learning_rate = 2.5e-3
  c.r1_gamma = 0.0002 * common.SG2_RESOLUTION ** 2 / c.data.batch_size
  c.ema_decay = 0.5 ** (c.data.batch_size / 10_000)
  c.total_steps = 2000
  c.eval_every = 1000
  c.checkpoint_every = 500
  c.eval.feature_layer = 'features'
  common.pad_to_stylegan2(c)
  if mode == 'demo':
    c.total_steps, c.eval_every = 600, 300
  if tiny:
    common.shrink_generative(c)
  return c
