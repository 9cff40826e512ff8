"""Generator distillation, the full mix: L1 + LPIPS (frozen classifier) + intermediate-feature MSE
through learned 1×1 adapters + adversarial (D tells teacher samples from student samples,
data-free) + tempered KL on the classifier's softmax(·/T) + batch relation KL.

Command (after gan_teacher and the classifier teacher):
  python launch.py --config configs/fashion_mnist/distill_full.py --workdir workdirs/fm_distill_full
Expected: README table (measured). Runtime on 2 CPU cores: see README. `:tiny` runs in seconds.
"""
from configs.fashion_mnist import distill_base

FROZEN = {'student_features': 'frozen_student_features',
          'teacher_features': 'frozen_teacher_features'}


def get_config(arg=None):
  c = distill_base.base_config(arg, [
      ('l1', 1.0, {}),
      {'name': 'lpips', 'weight': 1.0, 'inputs': FROZEN},
      {'name': 'feature_mse', 'weight': 1.0, 'label': 'feat_block0',
       'inputs': {'student_features': 'adapted/block0:block0',
                  'teacher_features': 'teacher_features/block0'}},
      ('gan_ns_g', 0.05, {}),
      {'name': 'kd', 'weight': 0.1, 'kwargs': {'temperature': 4.0}, 'label': 'tempered_kl',
       'inputs': {'student_logits': 'frozen_student_logits',
                  'teacher_logits': 'frozen_teacher_logits'}},
      {'name': 'relation_kl', 'weight': 1.0,
       'inputs': {'student_features': 'frozen_student_embedding',
                  'teacher_features': 'frozen_teacher_embedding'}},
  ])
  c.frozen_net.kind = 'classifier'
  c.frozen_net.checkpoint = 'workdirs/fm_teacher'
  c.frozen_net.layers = ['stage1', 'stage2', 'stage3']
  return c
