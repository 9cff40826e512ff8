"""Fashion-MNIST classification teacher: ResNet-20, supervised cross-entropy, crop+flip augmentation.

Command:
  python launch.py --config configs/fashion_mnist/teacher.py --workdir workdirs/fm_teacher
Expected: test top-1 ≥ 93% (see README "Fashion-MNIST study" for the measured value).
`:val` trains on `train[:90%]` only, validates on the held-out `train[90%:]` and scores `test` once at
the end (the teacher of the data-limited study, whose choices are made on that validation split).
Runtime on 2 CPU cores: see README (measured); `:tiny` runs in seconds (tests).
"""
import ml_collections

from configs.fashion_mnist import common
from kd_jax.trainers import classification


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  val, arg = common.split_variant(arg, 'val')
  mode = common.parse_arg(arg)
  tiny = mode == 'tiny'
  c = classification.default_config()
  c.model = common.teacher_model(mode)
  c.losses = [('ce', 1.0, {})]
  c.optimizer.update(dict(name='sgd', learning_rate=0.1, momentum=0.9, nesterov=True,
                          weight_decay=5e-4, schedule='cosine', warmup_steps=200))
  c.data.batch_size = 128
  c.total_steps = 6000
  c.log_every = 200
  c.eval_every = 2000
  c.checkpoint_every = 1000
  if mode == 'demo':
    c.total_steps, c.eval_every, c.optimizer.warmup_steps = 800, 0, 100
  if tiny:
    common.shrink(c)
    c.optimizer.warmup_steps = 0
  if val:
    common.use_validation(c)
  return c
