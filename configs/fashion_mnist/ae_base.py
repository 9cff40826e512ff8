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


# Paired image-to-image variants of `i2i_teacher.py` / `i2i_student.py`: (corruption, target).
I2I_VARIANTS = {'edges': ('none', 'edges'), 'stylize': ('none', 'stylize'),
                'inpaint': ('mask', 'identity')}
I2I_DEFAULT = 'edges'


def i2i_config(arg: str | None, *, student: bool) -> tuple[ml_collections.ConfigDict, str]:
  """':<variant>[,demo|tiny]' or ':tiny'/':demo'/nothing (variant 'edges') → (config, variant).

  Full runs: 1,000 steps (eval every 500) and FID in the shipped classifier's `features` space;
  `tiny` runs in seconds without FID.
  """
  variant, rest = I2I_DEFAULT, arg
  for name in I2I_VARIANTS:
    found, after = common.split_variant(arg, name)
    if found:
      variant, rest = name, after
  if (rest or 'full') not in common.MODES:
    raise ValueError(f'unknown config argument {arg!r}; use nothing or :<variant>[,demo|tiny] '
                     f'with a variant in {tuple(I2I_VARIANTS)} (default {I2I_DEFAULT!r}), or '
                     "':demo' / ':tiny'.")
  mode = common.parse_arg(rest)
  corruption, target = I2I_VARIANTS[variant]
  c = base_config(rest, student=student, corruption=corruption)
  c.target.kind = target
  if mode != 'tiny':
    c.total_steps = 1000
    c.eval_every = 500
    c.checkpoint_every = 500
    c.eval.classifier_checkpoint = 'pretrained:fashion_mnist/classifier'
  return c, variant
