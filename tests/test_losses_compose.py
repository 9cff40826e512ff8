"""Tests for the loss registry and `kd_jax.losses.compose` (weights, schedules, labels, inputs, mask)."""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from kd_jax import errors
from kd_jax import losses
from kd_jax.losses import registry

B = 4


def _outputs() -> dict[str, jax.Array]:
  r = np.random.default_rng(1)
  return {
      'student_logits': jnp.asarray(r.standard_normal((B, 5)), jnp.float32),
      'teacher_logits': jnp.asarray(r.standard_normal((B, 5)), jnp.float32),
      'labels': jnp.asarray(r.integers(0, 5, B), jnp.int32),
      'student_features/stage2': jnp.asarray(r.standard_normal((B, 2, 2, 3)), jnp.float32),
      'teacher_features/stage2': jnp.asarray(r.standard_normal((B, 2, 2, 3)), jnp.float32),
  }


OUT = _outputs()
KD = losses.kd(OUT['student_logits'], OUT['teacher_logits'])
CE = losses.ce(OUT['student_logits'], OUT['labels'])


def test_registry_lists_all_builtins_with_standard_roles():
  expected = {'kd', 'ce', 'hard_ce', 'reverse_kl', 'js', 'logit_mse', 'dkd', 'dist', 'fitnet', 'at',
              'sp', 'rkd', 'pkt', 'nst', 'cc', 'cc_repdistiller', 'vid', 'l1', 'l2', 'lpips', 'feature_mse', 'gan_ns_g',
              'gan_ns_d', 'tempered_sigmoid_kl', 'relation_kl', 'crd', 'weighted_l2'}
  assert set(losses.names()) == expected
  for name in expected:
    loss_def = losses.get(name)
    assert set(loss_def.roles) <= set(losses.STANDARD_ROLES), name
  assert losses.get('dkd').roles == ('student_logits', 'teacher_logits', 'labels')
  assert losses.get('vid').roles == ('vid_mean', 'teacher_features', 'vid_log_variance')
  assert losses.get('fitnet').roles == ('adapted', 'teacher_features')
  assert losses.get('gan_ns_d').roles == ('real_logits', 'fake_logits')
  assert losses.get('crd').roles == ('crd_student_scores', 'crd_teacher_scores')
  assert losses.get('kd').hyperparameters == {'temperature': 4.0}
  assert losses.get('dkd').hyperparameters == {'alpha': 1.0, 'beta': 8.0, 'temperature': 4.0}


def test_unknown_loss_name():
  with pytest.raises(errors.ConfigError, match=r"unknown loss 'xyz'; known: .*\bkd\b.*'pkg.module:function'"):
    losses.get('xyz')
  with pytest.raises(errors.ConfigError, match="unknown loss 'xyz'"):
    losses.compose([('xyz', 1.0)])


def test_register_custom_loss_and_guards():
  def half_l1(student_images, teacher_images, *, scale=0.5):
    return scale * losses.l1(student_images, teacher_images)
  try:
    losses.register('test_half_l1', half_l1, roles=('student_images', 'teacher_images'))
    assert 'test_half_l1' in losses.names()
    with pytest.raises(ValueError, match='already registered'):
      losses.register('test_half_l1', half_l1, roles=('student_images', 'teacher_images'))
    x = jnp.ones([2, 3])
    total, _ = losses.compose([('test_half_l1', 1.0, {'scale': 2.0})])(
        {'student_images': x, 'teacher_images': 0 * x}, 0)
    np.testing.assert_allclose(total, 2.0)
  finally:
    registry._REGISTRY.pop('test_half_l1', None)  # pylint: disable=protected-access
  with pytest.raises(ValueError, match='2 positional inputs but 1 roles'):
    losses.register('test_bad_arity', half_l1, roles=('student_images',))


def test_weights_multiply_the_batch_mean_and_terms_are_logged():
  composite = losses.compose([('kd', 0.9), ('ce', 0.1)])
  total, terms = composite(OUT, 0)
  np.testing.assert_allclose(terms['kd/raw'], jnp.mean(KD), rtol=1e-6)
  np.testing.assert_allclose(terms['kd'], 0.9 * jnp.mean(KD), rtol=1e-6)
  np.testing.assert_allclose(terms['ce'], 0.1 * jnp.mean(CE), rtol=1e-6)
  np.testing.assert_allclose(total, 0.9 * jnp.mean(KD) + 0.1 * jnp.mean(CE), rtol=1e-6)
  assert list(terms) == ['kd', 'kd/raw', 'ce', 'ce/raw']
  assert composite.labels == ('kd', 'ce')
  assert composite.required_keys == {'student_logits', 'teacher_logits', 'labels'}


def test_kwargs_reach_the_loss():
  total, _ = losses.compose([('kd', 1.0, {'temperature': 2.0})])(OUT, 0)
  expected = jnp.mean(losses.kd(OUT['student_logits'], OUT['teacher_logits'], temperature=2.0))
  np.testing.assert_allclose(total, expected, rtol=1e-6)
  assert not np.isclose(total, jnp.mean(KD))


def test_unknown_kwarg_names_term_and_valid_kwargs():
  with pytest.raises(errors.ConfigError,
                     match=r"config.losses\[1\] \('kd'\): unknown kwarg\(s\) T for loss 'kd'; "
                           r'valid kwargs: temperature'):
    losses.compose([('ce', 1.0), ('kd', 1.0, {'T': 2.0})])
  with pytest.raises(errors.ConfigError, match='takes no hyperparameters'):
    losses.compose([('l1', 1.0, {'scale': 2.0})])


def test_schedule_weight_from_mapping():
  composite = losses.compose([{
      'name': 'kd', 'weight': {'schedule': 'linear_schedule', 'init_value': 0.0, 'end_value': 1.0,
                               'transition_steps': 10}}])
  for step, w in [(0, 0.0), (5, 0.5), (10, 1.0), (50, 1.0)]:
    total, terms = composite(OUT, step)
    np.testing.assert_allclose(total, w * jnp.mean(KD), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(terms['kd/raw'], jnp.mean(KD), rtol=1e-6)


def test_schedule_weight_callable_and_traced_step_under_jit():
  composite = losses.compose([('kd', optax.cosine_decay_schedule(1.0, 100)), ('ce', 1.0)])
  run = jax.jit(lambda outputs, step: composite(outputs, step))
  for step in (0, 50, 100):
    total, _ = run(OUT, jnp.asarray(step))
    w = 0.5 * (1 + math.cos(math.pi * step / 100))
    np.testing.assert_allclose(total, w * jnp.mean(KD) + jnp.mean(CE), rtol=1e-5)
  # Eager and jitted agree; the composite can also be a static argument (hash by identity).
  static_run = jax.jit(lambda c, o, s: c(o, s), static_argnums=0)
  np.testing.assert_allclose(static_run(composite, OUT, 7)[0], composite(OUT, 7)[0], rtol=1e-6)


@pytest.mark.parametrize('weight, match', [
    ({'schedule': 'no_such_schedule'}, r"config.losses\[0\].weight.schedule='no_such_schedule' is "
                                       r'not an optax schedule; use one of: .*linear_schedule'),
    ({'schedule': 'linear_schedule', 'init_value': 0.0}, r'config.losses\[0\].weight: '
                                                         r'optax.linear_schedule'),
    ('heavy', r'config.losses\[0\].weight=.heavy. is not a number'),
    (True, 'is a bool'),
])
def test_bad_weights(weight, match):
  with pytest.raises(errors.ConfigError, match=match):
    losses.compose([('kd', weight)])


def test_labels_and_duplicates():
  composite = losses.compose([
      ('kd', 1.0), ('kd', 2.0), {'name': 'kd', 'weight': 3.0}, {'name': 'kd', 'weight': 1.0,
                                                                  'label': 'soft'}])
  assert composite.labels == ('kd', 'kd_1', 'kd_2', 'soft')


def test_inputs_remap_roles_to_output_keys():
  stage = {'adapted': 'student_features/stage2', 'teacher_features': 'teacher_features/stage2'}
  composite = losses.compose([{'name': 'fitnet', 'weight': 2.0, 'inputs': stage, 'label': 'hint2'}])
  assert composite.required_keys == {'student_features/stage2', 'teacher_features/stage2'}
  total, terms = composite(OUT, 0)
  expected = jnp.mean(losses.fitnet(OUT['student_features/stage2'], OUT['teacher_features/stage2']))
  np.testing.assert_allclose(terms['hint2/raw'], expected, rtol=1e-6)
  np.testing.assert_allclose(total, 2.0 * expected, rtol=1e-6)
  # Partial mapping: unmapped roles keep their default key.
  partial = losses.compose([{'name': 'kd', 'weight': 1.0, 'inputs': {'teacher_logits': 'labels2'}}])
  assert partial.required_keys == {'student_logits', 'labels2'}


def test_unknown_role_in_inputs():
  with pytest.raises(errors.ConfigError, match=r"unknown role\(s\) logits for loss 'kd'; its roles are: "
                                               r'student_logits, teacher_logits'):
    losses.compose([{'name': 'kd', 'weight': 1.0, 'inputs': {'logits': 'x'}}])


def test_missing_key_names_term_role_and_provided_keys():
  composite = losses.compose([('ce', 1.0), {'name': 'kd', 'weight': 1.0, 'label': 'soft'}])
  outputs = {'student_logits': OUT['student_logits'], 'labels': OUT['labels']}
  with pytest.raises(errors.ConfigError,
                     match=r"loss term 'soft' \(kd, config.losses\[1\]\) needs outputs\['teacher_logits'\] "
                           r"for its role 'teacher_logits', but the trainer provided only "
                           r"\['labels', 'student_logits'\]"):
    composite(outputs, 0)


@pytest.mark.parametrize('terms, match', [
    ([], 'is empty'),
    ([('kd',)], r'must be \(name, weight\)'),
    ([{'name': 'kd'}], "has no 'weight'"),
    ([{'name': 'kd', 'weight': 1.0, 'temperature': 2.0}], r'unknown key\(s\) temperature; valid keys'),
    ([42], 'is not a loss term'),
    ({'name': 'kd', 'weight': 1.0}, 'must be a list of loss terms'),
])
def test_malformed_terms(terms, match):
  with pytest.raises(errors.ConfigError, match=match):
    losses.compose(terms)


def test_config_dict_terms():
  config = ml_collections.ConfigDict()
  config.losses = [{'name': 'kd', 'weight': 0.5, 'kwargs': {'temperature': 2.0}},
                   ('ce', 0.5, {})]
  total, _ = losses.compose(config.losses)(OUT, 0)
  kd2 = losses.kd(OUT['student_logits'], OUT['teacher_logits'], temperature=2.0)
  np.testing.assert_allclose(total, 0.5 * jnp.mean(kd2) + 0.5 * jnp.mean(CE), rtol=1e-6)
  # A ConfigDict as a term (not just dicts inside a list) works too.
  term = ml_collections.ConfigDict({'name': 'ce', 'weight': 1.0})
  np.testing.assert_allclose(losses.compose([term])(OUT, 0)[0], jnp.mean(CE), rtol=1e-6)


def test_mask_gives_mean_over_kept_rows_and_blocks_nans():
  composite = losses.compose([('kd', 1.0)])
  mask = jnp.array([True, False, True, False])
  total, terms = composite(OUT, 0, mask=mask)
  np.testing.assert_allclose(total, (KD[0] + KD[2]) / 2, rtol=1e-6)
  np.testing.assert_allclose(terms['kd/raw'], total, rtol=1e-6)
  # 0/1 float masks work the same; an all-padding batch gives 0, not NaN.
  np.testing.assert_allclose(composite(OUT, 0, mask=jnp.array([1.0, 0, 1, 0]))[0], total, rtol=1e-6)
  np.testing.assert_array_equal(composite(OUT, 0, mask=jnp.zeros([B], bool))[0], 0.0)
  # A NaN in a padded row must not leak into the loss.
  poisoned = dict(OUT, student_logits=OUT['student_logits'].at[1].set(jnp.nan))
  total_p, _ = composite(poisoned, 0, mask=mask)
  np.testing.assert_allclose(total_p, total, rtol=1e-6)
  with pytest.raises(errors.ConfigError, match='mask of shape'):
    composite(OUT, 0, mask=jnp.ones([B + 1], bool))


def test_gradient_of_total_is_the_weighted_sum_of_term_gradients():
  composite = losses.compose([('kd', 0.7), ('ce', 0.3)])

  def total_of(logits):
    return composite(dict(OUT, student_logits=logits), 0)[0]

  def term_grads(s):
    g_kd = jax.grad(lambda x: jnp.mean(losses.kd(x, OUT['teacher_logits'])))(s)
    g_ce = jax.grad(lambda x: jnp.mean(losses.ce(x, OUT['labels'])))(s)
    return g_kd, g_ce

  g = jax.jit(jax.grad(total_of))(OUT['student_logits'])
  g_kd, g_ce = jax.jit(term_grads)(OUT['student_logits'])
  np.testing.assert_allclose(g, 0.7 * g_kd + 0.3 * g_ce, rtol=1e-5, atol=1e-7)
