"""Fashion-MNIST scratch GAN student: the distilled students' small generator (width 4) trained as a
GAN from data, same recipe and steps as the distillation runs — the baseline they must beat.

Command:
  python launch.py --config configs/fashion_mnist/gan_scratch_student.py \
      --workdir workdirs/fm_gan_scratch --config.eval.classifier_checkpoint=workdirs/fm_teacher
Expected: worse FID than the distilled students at equal steps (README table, measured).
Runtime on 2 CPU cores: see README (measured). `:tiny` runs in seconds.
"""
import ml_collections

from configs.fashion_mnist import common, gan_teacher

STUDENT_STEPS = 3000


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = gan_teacher.get_config(arg)
  tiny = arg == 'tiny'
  c.generator = dict(common.TINY_GAN_STUDENT if tiny else common.GAN_STUDENT)
  if not tiny:
    c.total_steps = STUDENT_STEPS if arg != 'demo' else 1000
  if arg == 'demo':
    c.eval_every = 0  # the demo compares final FIDs; intermediate ones would cost ~30 s each
  return c
