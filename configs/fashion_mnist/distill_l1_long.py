"""Generator distillation, output-level L1 only, trained 10× longer (30,000 steps): the student-vs-
teacher PSNR keeps rising with training (3,000 steps: 16.5 dB, 15,000: 17.9 dB; README table).

Command (after gan_teacher and the classifier teacher):
  python launch.py --config configs/fashion_mnist/distill_l1_long.py --workdir workdirs/fm_distill_l1_long
Runtime on 2 CPU cores: see README. `:tiny` runs in seconds.
"""
from configs.fashion_mnist import common, distill_base

LONG_STEPS = 30000


def get_config(arg=None):
  c = distill_base.base_config(arg, [('l1', 1.0, {})])
  if common.parse_arg(arg) == 'full':  # demo and tiny keep their short schedules
    c.total_steps = LONG_STEPS
    c.eval_every = 10000
    c.checkpoint_every = 5000
  return c
