"""Generator distillation, output-level only: L1 between student and teacher images on the same z.

Command (after gan_teacher and the classifier teacher):
  python launch.py --config configs/fashion_mnist/distill_l1.py --workdir workdirs/fm_distill_l1
Expected: PSNR vs teacher and FID in summary.json (README "Generator distillation study", measured).
Runtime on 2 CPU cores: see README. `:tiny` runs in seconds.
"""
from configs.fashion_mnist import distill_base


def get_config(arg=None):
  return distill_base.base_config(arg, [('l1', 1.0, {})])
