"""Typed outputs keys (kd_jax.keys), and how loss terms resolve their roles through them."""
import numpy as np
import pytest

from kd_jax import errors, keys, losses


@pytest.mark.parametrize('text, family, student, teacher, index', [
    ('student_logits', 'student_logits', '', '', None),
    ('teacher2_logits', 'teacher_logits', '', '', 2),
    ('student_features/stage2/block0', 'student_features', 'stage2/block0', '', None),
    ('teacher_features/stage3', 'teacher_features', '', 'stage3', None),
    ('teacher1_features/stage3', 'teacher_features', '', 'stage3', 1),
    ('adapted/stage1:stage2', 'adapted', 'stage1', 'stage2', None),
    ('vid_log_variance/a/b:c', 'vid_log_variance', 'a/b', 'c', None),
    ('frozen_student_features', 'frozen_student_features', '', '', None),
])
def test_parse_and_render_round_trip(text, family, student, teacher, index):
  key = keys.parse(text)
  assert (key.family, key.student, key.teacher, key.index) == (family, student, teacher, index)
  assert str(key) == text


@pytest.mark.parametrize('text, match', [
    ('student_features', 'needs a layer'),
    ('adapted/stage2', "'adapted/<student path>:<teacher path>'"),
    ('student_logits/x', 'takes no'),
])
def test_parse_rejects_malformed_keys(text, match):
  with pytest.raises(errors.ConfigError, match=match):
    keys.parse(text)


def test_reads_teacher():
  reads = {k: keys.parse(k).reads_teacher for k in (
      'student_logits', 'labels', 'teacher_logits', 'teacher1_logits', 'adapted/a:b', 'vid_mean/a:b',
      'crd_student_scores', 'frozen_teacher_logits', 'frozen_student_logits', 'student_features/a')}
  assert [k for k, v in reads.items() if v] == [
      'teacher_logits', 'teacher1_logits', 'adapted/a:b', 'vid_mean/a:b', 'crd_student_scores',
      'frozen_teacher_logits']


def test_for_role_fills_the_layer_into_layered_roles_only():
  assert keys.for_role('student_logits', 'stage2') == 'student_logits'
  assert keys.for_role('student_features', 'stage1:stage2') == 'student_features/stage1'
  assert keys.for_role('teacher_features', 'stage1:stage2') == 'teacher_features/stage2'
  assert keys.for_role('adapted', 'stage2') == 'adapted/stage2:stage2'
  with pytest.raises(errors.ConfigError, match="give the term a 'layer'"):
    keys.for_role('teacher_features', None)


def test_check_offered_names_what_the_trainer_offers():
  assert [str(k) for k in keys.check_offered(['student_logits', 'adapted/a:b'],
                                             ('student_logits', 'adapted'), 'x')] == [
      'adapted/a:b', 'student_logits']
  with pytest.raises(errors.ConfigError,
                     match=r"read 'fake_logits'.*the gan trainer.*offers: student_logits, "
                           r"adapted/<s>:<t>, student_features/<path>"):
    keys.check_offered(['fake_logits'], ('student_logits', 'adapted', 'student_features'), 'gan')


def test_terms_with_a_layer_need_no_inputs_remap():
  composite = losses.compose([{'name': 'fitnet', 'weight': 1.0, 'layer': 'stage2'},
                              {'name': 'vid', 'weight': 1.0, 'layer': 's1:t1'},
                              {'name': 'at', 'weight': 1.0, 'layer': 'stage3'}])
  assert composite.required_keys == {
      'adapted/stage2:stage2', 'teacher_features/stage2', 'vid_mean/s1:t1', 'teacher_features/t1',
      'vid_log_variance/s1:t1', 'student_features/stage3', 'teacher_features/stage3'}
  with pytest.raises(errors.ConfigError, match=r"config.losses\[0\] \('at', loss 'at'\).*layer"):
    losses.compose([('at', 1.0)])
  # An explicit remap still wins over the layer.
  remapped = losses.compose([{'name': 'at', 'weight': 1.0, 'layer': 'stage3',
                              'inputs': {'teacher_features': 'teacher1_features/stage3'}}])
  assert remapped.required_keys == {'student_features/stage3', 'teacher1_features/stage3'}


def test_run_values_fill_hyperparameters_the_config_does_not_set():
  s = np.ones([2, 3], np.float32)
  with pytest.raises(errors.ConfigError, match='num_data'):
    losses.compose([('crd', 1.0)])
  by_run = losses.compose([('crd', 1.0)], run_values={'num_data': 4, 'unrelated': 1})
  by_config = losses.compose([('crd', 1.0, {'num_data': 4})])
  set_both = losses.compose([('crd', 1.0, {'num_data': 40})], run_values={'num_data': 4})
  out = {'crd_student_scores': s, 'crd_teacher_scores': s}
  np.testing.assert_allclose(by_run(out, 0)[0], by_config(out, 0)[0])
  assert float(set_both(out, 0)[0]) != float(by_run(out, 0)[0])  # the config's value wins
