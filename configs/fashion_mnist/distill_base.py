"""Shared base of the generator-distillation configs (not a run by itself; see distill_*.py)."""
import ml_collections

from configs.fashion_mnist import common, gan_scratch_student
from kd_jax.trainers import generator_distill


def base_config(arg: str | None, losses: list) -> ml_collections.ConfigDict:
  mode = common.parse_arg(arg)
  demo, tiny = mode == 'demo', mode == 'tiny'
  c = generator_distill.default_config()
  c.model = dict(common.TINY_GAN_STUDENT if tiny else common.GAN_STUDENT)
  c.teacher.checkpoint = 'workdirs/fm_gan_teacher'
  c.teacher.model = dict(common.TINY_GAN_TEACHER if tiny else common.GAN_TEACHER)
  c.adversarial.discriminator = dict(common.TINY_GAN_DISCRIMINATOR if tiny
                                     else common.GAN_DISCRIMINATOR)
  c.losses = losses
  c.optimizer.update(dict(name='adam', learning_rate=1e-3, schedule='cosine', b1=0.5, b2=0.99))
  c.data.batch_size = 64
  c.total_steps = gan_scratch_student.STUDENT_STEPS
  c.eval_every = 1000
  c.checkpoint_every = 1000
  c.eval.feature_layer = 'features'
  c.eval.classifier_checkpoint = 'workdirs/fm_teacher'
  if demo:
    c.total_steps = 600
    c.eval_every = 0  # only the final 10k-sample evaluation: keeps `make demo` within 10 minutes
  if tiny:
    common.shrink_generative(c)
  return c
