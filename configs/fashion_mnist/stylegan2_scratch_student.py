"""The StyleGAN2-ADA student trained from data with the teacher's recipe and the distilled
students' step count: the baseline distillation must beat.

Command:
  python launch.py --config configs/fashion_mnist/stylegan2_scratch_student.py \
      --workdir workdirs/fm_sg2_scratch
"""
import ml_collections

from configs.fashion_mnist import common, stylegan2_teacher

STUDENT_STEPS = 1500


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = stylegan2_teacher.get_config(arg)
  mode = common.parse_arg(arg)
  c.generator = dict(common.TINY_SG2_STUDENT if mode == 'tiny' else common.SG2_STUDENT)
  if mode == 'full':
    c.total_steps = STUDENT_STEPS
    c.eval_every = 0  # FID once, at the end (10k samples)
    c.eval.classifier_checkpoint = 'pretrained:fashion_mnist/classifier'
  return c
