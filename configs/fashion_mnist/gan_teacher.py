"""Fashion-MNIST GAN teacher: DCGAN-style generator (nearest-upsample + conv, width 32), logistic
non-saturating loss, R1 (γ=1), G EMA (0.999), Adam(2e-4, β=(0, 0.99)).

Command:
  python launch.py --config configs/fashion_mnist/gan_teacher.py --workdir workdirs/fm_gan_teacher \
      --config.eval.classifier_checkpoint=workdirs/fm_teacher
Expected: recognisable garments in workdirs/fm_gan_teacher/images/; FID in the classifier's feature
space in summary.json (README "Generator distillation study" has the measured value).
Runtime on 2 CPU cores: see README (measured). `:tiny` runs in seconds; `:demo` is the short demo.
"""
import ml_collections

from configs.fashion_mnist import common
from kd_jax.trainers import gan


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  mode = common.parse_arg(arg)
  demo, tiny = mode == 'demo', mode == 'tiny'
  c = gan.default_config()
  c.generator = dict(common.TINY_GAN_TEACHER if tiny else common.GAN_TEACHER)
  c.discriminator = dict(common.TINY_GAN_DISCRIMINATOR if tiny else common.GAN_DISCRIMINATOR)
  c.data.batch_size = 64
  c.total_steps = 6000
  c.eval_every = 1000
  c.checkpoint_every = 1000
  c.eval.feature_layer = 'features'
  if demo:
    c.total_steps = 1200
    c.eval_every = 400
  if tiny:
    common.shrink_generative(c)
  return c
