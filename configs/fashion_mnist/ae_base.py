"""Shared base of the autoencoder / restoration configs (not a run by itself)."""
import ml_collections

from configs.fashion_mnist import common
from kd_jax.trainers import autoencoder

TO_INPUT = {'teacher_images': 'target_images'}


def base_config(arg: str | None, *, student: bool, corruption: str) -> ml_collections.ConfigDict:
  mode = common.parse_arg(arg)
  tiny = mode == 'tiny'
  c = autoencoder.default_config()
  teacher_model = common.TINY_AE_TEACHER if tiny else common.AE_TEACHER
  c.model = dict((common.TINY_AE_STUDENT if tiny else common.AE_STUDENT) if student
                 else teacher_model)
  c.corruption.kind = corruption
  c.optimizer.update(dict(name='adam', learning_rate=2e-3, schedule='cosine', warmup_steps=100))
  c.total_steps = 3000 if mode == 'full' else 1000
  c.eval_every = 1000
  c.checkpoint_every = 1000
  if student:
    # Toward the teacher's output, toward the clean target, and the latent code through an adapter.
    c.losses = [('l2', 1.0, {}),
                {'name': 'l2', 'weight': 0.5, 'label': 'l2_target', 'inputs': TO_INPUT},
                {'name': 'feature_mse', 'weight': 0.1, 'label': 'latent',
                 'inputs': {'student_features': 'adapted/latent:latent',
                            'teacher_features': 'teacher_features/latent'}}]
    c.teacher.model = dict(teacher_model)
  else:
    c.losses = [{'name': 'l2', 'weight': 1.0, 'inputs': TO_INPUT}]
  if tiny:
    common.shrink_generative(c)
    c.optimizer.warmup_steps = 0
  return c
