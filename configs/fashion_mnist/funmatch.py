"""Function matching (Beyer et al. 2022, "Knowledge distillation: A good teacher is patient and
consistent"): teacher and student see the very same mixed-up, cropped and flipped batch, and the
student learns from the teacher alone (KL at T=1, no labels); the recipe wants long ("patient")
schedules, so `total_steps` here is 5× the other students'.

Command (after the teacher run):
  python launch.py --config configs/fashion_mnist/funmatch.py --workdir workdirs/fm_funmatch
`:tiny` runs in seconds.
"""
import ml_collections

from configs.fashion_mnist import common, scratch_student


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  mode = common.parse_arg(arg)
  c = scratch_student.get_config(arg)
  c.teacher.checkpoint = 'workdirs/fm_teacher'
  c.teacher.model = common.teacher_model(mode)
  c.losses = [('kd', 1.0, {'temperature': 1.0})]
  c.data.mixup_alpha = 1.0
  if mode == 'full':
    c.total_steps = 5 * scratch_student.STUDENT_STEPS
    c.eval_every = 2000
  return c
