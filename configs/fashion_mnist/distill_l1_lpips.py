"""Generator distillation, output + perceptual: L1 + LPIPS-style distance through the frozen
Fashion-MNIST classifier's stages (unit-normalised channels, spatial mean).

Command (after gan_teacher and the classifier teacher):
  python launch.py --config configs/fashion_mnist/distill_l1_lpips.py \
      --workdir workdirs/fm_distill_l1_lpips --config.frozen_net.checkpoint=workdirs/fm_teacher
Expected: better FID than L1 alone (README table, measured). Runtime on 2 CPU cores: see README.
"""
from configs.fashion_mnist import distill_base


def get_config(arg=None):
  c = distill_base.base_config(arg, [
      ('l1', 1.0, {}),
      {'name': 'lpips', 'weight': 1.0, 'inputs': {'student_features': 'frozen_student_features',
                                                  'teacher_features': 'frozen_teacher_features'}}])
  c.frozen_net.kind = 'classifier'
  c.frozen_net.checkpoint = 'workdirs/fm_teacher'
  c.frozen_net.layers = ['stage1', 'stage2', 'stage3']
  return c
