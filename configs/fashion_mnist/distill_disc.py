"""Generator distillation through the GAN teacher's own frozen discriminator: L1 + LPIPS-style
distance on D's block features + tempered sigmoid KL between σ(D(x_t)/T) and σ(D(x_s)/T).

No classifier is needed for training (only for the FID report).

Command (after gan_teacher):
  python launch.py --config configs/fashion_mnist/distill_disc.py --workdir workdirs/fm_distill_disc
Expected: README table (measured). Runtime on 2 CPU cores: see README. `:tiny` runs in seconds.
"""
from configs.fashion_mnist import distill_base


def get_config(arg=None):
  c = distill_base.base_config(arg, [
      ('l1', 1.0, {}),
      {'name': 'lpips', 'weight': 1.0,
       'inputs': {'student_features': 'frozen_student_features',
                  'teacher_features': 'frozen_teacher_features'}},
      {'name': 'tempered_sigmoid_kl', 'weight': 0.1, 'kwargs': {'temperature': 2.0},
       'inputs': {'fake_logits': 'frozen_student_logits',
                  'teacher_fake_logits': 'frozen_teacher_logits'}},
  ])
  c.frozen_net.kind = 'teacher_discriminator'
  c.frozen_net.layers = ['block0', 'block1']
  return c
