"""kd_jax.models.PRESETS: every student has ≤ 1/8 of its teacher's parameters and FLOPs."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kd_jax import errors, models

SIZES = [(28, 1), (32, 3)]


def _build(family, role, res, ch):
  cfg = models.preset(family, role)
  name = cfg.pop('name')
  if models.kind(name) == 'generator':
    cfg.update(resolution=res, channels=ch)
  module = models.get(name, **cfg)
  x = (jnp.zeros((1, module.latent_dim)) if models.kind(name) == 'generator'
       else jnp.zeros((1, res, res, ch)))
  return module, x


def _abstract_variables(module, x):
  return jax.eval_shape(lambda: module.init(jax.random.key(0), x, train=False))


def _params(variables):
  return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(variables['params']))


def _flops(module, variables, x):
  # Lowered from abstract shapes: nothing is initialised or run.
  compiled = jax.jit(lambda v, x: module.apply(v, x, train=False)).lower(variables, x).compile()
  analysis = compiled.cost_analysis()
  if isinstance(analysis, (list, tuple)):  # a list of per-computation dicts in some versions
    return sum(a.get('flops', 0.0) for a in analysis if a)
  return analysis['flops']


def test_presets_cover_the_required_families_and_share_latents():
  assert set(models.PRESETS) == {'classifier', 'dcgan_generator', 'stylegan2_generator',
                                 'conv_autoencoder'}
  for family, roles in models.PRESETS.items():
    assert models.kind(roles['teacher']['name']) == models.kind(roles['student']['name'])
    if 'latent_dim' in roles['teacher']:
      assert roles['teacher']['latent_dim'] == roles['student']['latent_dim'], family
  assert models.preset('classifier', 'student', num_classes=7) == {
      'name': 'small_cnn', 'width': 16, 'num_classes': 7}
  with pytest.raises(errors.ConfigError, match="'teacher' or 'student'"):
    models.preset('classifier', 'pupil')


@pytest.mark.parametrize('res, ch', SIZES)
@pytest.mark.parametrize('family', sorted(models.PRESETS))
def test_student_has_at_most_an_eighth_of_the_params(family, res, ch):
  t, xt = _build(family, 'teacher', res, ch)
  s, xs = _build(family, 'student', res, ch)
  t_params, s_params = _params(_abstract_variables(t, xt)), _params(_abstract_variables(s, xs))
  assert s_params <= t_params / 8, (family, res, s_params, t_params)


@pytest.mark.parametrize('family', sorted(models.PRESETS))
def test_student_has_at_most_an_eighth_of_the_flops(family):
  res, ch = 32, 3
  t, xt = _build(family, 'teacher', res, ch)
  s, xs = _build(family, 'student', res, ch)
  t_flops = _flops(t, _abstract_variables(t, xt), xt)
  s_flops = _flops(s, _abstract_variables(s, xs), xs)
  assert np.isfinite(s_flops) and s_flops > 0
  assert s_flops <= t_flops / 8, (family, s_flops, t_flops)
