"""The validation protocol: train on the first 90% of `train`, evaluate periodically on the held-out
10%, score the test split once at the end; and old run records still match new fields."""
import json
import os

import jax
import jax.numpy as jnp
import pytest

from conftest import TINY_TRAIN, tiny_config
from configs.fashion_mnist import common as fm_common
from kd_jax import data, run_identity
from kd_jax.models import registry
from kd_jax.trainers import classification


def test_validation_is_held_out_and_test_is_scored_once(teacher_workdir, tiny_data_dir, tmp_path):
  config = fm_common.use_validation(tiny_config(
      'fashion_mnist/kd_student.py', tiny_data_dir, **{'teacher.checkpoint': teacher_workdir}))
  train = data.get_source('fashion_mnist', config.data.train_split, data_dir=tiny_data_dir)
  val = data.get_source('fashion_mnist', config.data.eval_split, data_dir=tiny_data_dir)
  assert len(train) + len(val) == TINY_TRAIN and len(val) == round(TINY_TRAIN / 10)  # 6,000 of 60k
  full = data.get_source('fashion_mnist', 'train', data_dir=tiny_data_dir)
  # The held-out images are the last ones of `train`, in order.
  assert (val[0]['image'] == full[len(train)]['image']).all()
  summary = classification.train_and_evaluate(config, str(tmp_path / 'run'))
  assert summary['test']['split'] == 'test'
  assert 0.0 <= summary['test']['test/student_top1'] <= 1.0
  assert 'test/teacher_top1' in summary['test'] and 'eval/student_top1' in summary['eval']
  with open(tmp_path / 'run' / 'summary.json') as f:
    assert json.load(f)['test'] == pytest.approx(summary['test'])


def test_a_record_from_before_a_field_existed_matches_its_old_behaviour():
  old = {'seed': 0}
  assert run_identity.differences(old, {'seed': 0, 'compute_dtype': 'float32'}) == []
  assert run_identity.differences(old, {'seed': 0, 'data.test_split': ''}) == []
  assert run_identity.differences(old, {'seed': 0, 'compute_dtype': 'bfloat16'}) == [
      "config.compute_dtype: <unset> in the run, 'bfloat16' now"]
  assert run_identity.differences(old, {'seed': 0, 'ema_decay': 0.0,
                                         'adversarial.r1_every': 1}) == []
  assert run_identity.differences(old, {'seed': 0, 'ema_decay': 0.999}) != []
  assert run_identity.differences({'seed': 0}, {}) != []


def test_few_data_students_share_the_first_tenth_of_the_training_part(tiny_data_dir):
  from configs.fashion_mnist import kd_student, scratch_student, teacher  # pylint: disable=import-outside-toplevel
  scratch, kd = scratch_student.get_config('few,tiny'), kd_student.get_config('few,tiny')
  assert scratch.data.to_dict() == kd.data.to_dict()  # the comparison is on the same images
  assert teacher.get_config('val,tiny').data.train_split == fm_common.VALIDATION['train_split']
  few = data.get_source('fashion_mnist', scratch.data.train_split, data_dir=tiny_data_dir)
  train = data.get_source('fashion_mnist', fm_common.VALIDATION['train_split'],
                          data_dir=tiny_data_dir)
  assert len(few) == round(TINY_TRAIN * 0.09)  # 10% of the 90% training part: 5,400 of 60k
  assert (few[len(few) - 1]['image'] == train[len(few) - 1]['image']).all()  # its first images
  assert scratch.data.eval_split == fm_common.VALIDATION['eval_split']  # never trained on


def test_full_data_students_train_on_the_whole_training_part_with_the_val_teacher():
  from configs.fashion_mnist import kd_student, scratch_student  # pylint: disable=import-outside-toplevel
  scratch, kd = scratch_student.get_config('val'), kd_student.get_config('val,T=4')
  assert scratch.data.to_dict() == kd.data.to_dict()
  assert {k: scratch.data[k] for k in fm_common.VALIDATION} == fm_common.VALIDATION
  assert scratch.eval_every == 1000 and kd.teacher.model.to_dict() == fm_common.TEACHER_MODEL
  assert kd.losses == [('kd', 0.5, {'temperature': 4.0}), ('ce', 0.5, {})]
  # Any data variant distils from the teacher that never saw the validation images.
  assert kd.teacher.checkpoint == kd_student.get_config('few,tiny').teacher.checkpoint == (
      'workdirs/fm_teacher_val')
  assert kd_student.get_config('tiny').teacher.checkpoint == 'workdirs/fm_teacher'
  assert kd_student.get_config('val,tiny').teacher.model.to_dict() == fm_common.TINY_TEACHER_MODEL
  # The study's deeper student is a CLI override away, and old records without the field resume.
  scratch.model.update(width=18, convs_per_stage=2)
  deep = registry.get(**scratch.model.to_dict())
  shapes = jax.eval_shape(deep.init, jax.random.key(0), jnp.zeros((1, 28, 28, 1)))['params']
  assert sorted(shapes['stage3']) == ['conv0', 'conv1']
  assert sum(x.size for x in jax.tree.leaves(shapes)) == 91_792  # the "~100k-param" student
  assert run_identity.differences({'model.width': 16}, {'model.width': 16,
                                                        'model.convs_per_stage': 1}) == []
  assert run_identity.differences({'model.width': 16}, {'model.width': 16,
                                                        'model.convs_per_stage': 2}) != []


def test_kd_sweep_options_set_temperature_and_alpha_and_refuse_unknown_ones():
  from configs.fashion_mnist import kd_student  # pylint: disable=import-outside-toplevel
  c = kd_student.get_config('few,T=4,alpha=0.9,tiny')
  assert c.losses == [('kd', 0.9, {'temperature': 4.0}), ('ce', 0.1, {})]
  assert c.data.train_split == fm_common.FEW_DATA['train_split']
  assert kd_student.get_config('alpha=1,tiny').losses == [('kd', 1.0, {'temperature': 2.0})]
  with pytest.raises(ValueError, match="unknown config option 'beta'"):
    kd_student.get_config('few,beta=3')
  with pytest.raises(ValueError, match='must be in'):
    kd_student.get_config('alpha=0')


def test_benchmark_knobs_scale_only_the_method_and_need_the_validation_protocol():
  from configs.fashion_mnist import methods  # pylint: disable=import-outside-toplevel
  pkt = methods.get_config('pkt,val,w=0.1,tiny')
  assert [(t['name'], t['weight']) for t in pkt.losses] == [('ce', 1.0), ('pkt', 3000.0)]
  assert pkt.data.eval_split == fm_common.VALIDATION['eval_split']
  assert pkt.teacher.checkpoint == 'workdirs/fm_teacher_val'  # the teacher that never saw it
  assert methods.get_config('pkt,tiny').teacher.checkpoint == 'workdirs/fm_teacher'
  kd = methods.get_config('kd,val,alpha=0.9,T=4,tiny').losses
  assert [(t['name'], t['weight'], t['kwargs']) for t in kd] == [
      ('kd', 0.9, {'temperature': 4.0}), ('ce', 0.1, {})]
  assert [t['name'] for t in methods.get_config('logit_mse,val,alpha=1,tiny').losses] == [
      'logit_mse']  # no CE term at weight 0
  dkd = methods.get_config('dkd,val,beta=2,w=0.5,tiny').losses[1]
  assert dkd['weight']['end_value'] == 0.5 and dkd['weight']['init_value'] == 0.0
  assert dkd['kwargs'] == {'alpha': 1.0, 'beta': 2.0, 'temperature': 4.0}
  at = methods.get_config('at,val,w=0.01,tiny').losses
  assert [t['weight'] for t in at] == [1.0, 0.01, 0.01, 0.01]  # one per stage, all scaled
  assert methods.get_config('at,tiny').losses == methods.METHODS['at']  # no knobs: unchanged
  for arg, match in [('pkt,val,T=2', 'do not apply to pkt'), ('scratch,val,w=2', 'no options'),
                     ('kd,alpha=0.9', "add ',val'"), ('kd,val,alpha=1.5', 'must be in'),
                     ('kd,val,gamma=1', "unknown config option 'gamma'")]:
    with pytest.raises(ValueError, match=match):
      methods.get_config(arg)


def test_every_sweep_point_builds_and_holds_its_reference():
  from configs.fashion_mnist import methods  # pylint: disable=import-outside-toplevel
  assert set(methods.SWEEP) == set(methods.METHODS) | {'fitnet_stages'}
  for method, grid in methods.SWEEP.items():
    assert methods.REFERENCE[method] in grid, method
    for point in grid:
      config = methods.get_config(','.join(p for p in (method, 'val', point, 'tiny') if p))
      assert config.data.test_split == 'test', (method, point)


def _fake_run(root, method, point, seed, val, test):
  import kd_methods_tuned as tuned  # pylint: disable=import-outside-toplevel
  wd = tuned.workdir(str(root), method, point, seed)
  os.makedirs(wd)
  with open(os.path.join(wd, 'summary.json'), 'w') as f:
    json.dump({'eval': {'eval/student_top1': val}, 'test': {'test/student_top1': test},
               'eval_history': [{'eval/student_top1': val - 0.01}, {'eval/student_top1': val}],
               'train_seconds': 10.0}, f)


def test_tuned_benchmark_picks_on_validation_and_pairs_with_scratch(tmp_path, monkeypatch):
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  monkeypatch.syspath_prepend(os.path.join(repo, 'benchmarks'))
  import kd_methods_tuned as tuned  # pylint: disable=import-outside-toplevel
  from configs.fashion_mnist import methods  # pylint: disable=import-outside-toplevel
  assert methods.SWEEP['pkt'] == methods.SWEEP['sp'] == ['w=0.001', 'w=0.01', 'w=0.1', 'w=1']
  vals, tests = (0.79, 0.80, 0.82, 0.81), (0.95, 0.90, 0.70, 0.99)
  for point, val, test in zip(methods.SWEEP['pkt'], vals, tests):
    _fake_run(tmp_path, 'pkt', point, 0, val, test)
  # The pick follows validation, never the (here contrary) test numbers.
  assert tuned.chosen(str(tmp_path), 'pkt') == 'w=0.1'
  assert tuned.chosen(str(tmp_path), 'at') is None  # sweep not run yet
  _fake_run(tmp_path, 'sp', 'w=0.001', 0, 0.79, 0.5)
  _fake_run(tmp_path, 'sp', 'w=0.01', 0, 0.81, 0.5)
  _fake_run(tmp_path, 'sp', 'w=0.1', 0, 0.80, 0.5)
  _fake_run(tmp_path, 'sp', 'w=1', 0, 0.81, 0.5)
  assert tuned.chosen(str(tmp_path), 'sp') == 'w=1'  # a tie keeps the reference point
  # Seeds 1 and 2 of the reference and of the pick; nothing for a method whose sweep is unfinished.
  assert sorted(tuned.jobs(str(tmp_path), ['pkt', 'at'], 'seeds')) == [
      ('at', 'w=1', 1), ('at', 'w=1', 2), ('pkt', 'w=0.1', 1), ('pkt', 'w=0.1', 2),
      ('pkt', 'w=1', 1), ('pkt', 'w=1', 2)]
  for seed, (s_test, t_test) in enumerate([(0.69, None), (0.72, 0.75), (0.74, 0.73)]):
    _fake_run(tmp_path, 'scratch', '', seed, 0.5, s_test)
    if seed:
      _fake_run(tmp_path, 'pkt', 'w=0.1', seed, 0.5, t_test)
  row = next(r for r in tuned.result_table(str(tmp_path), ['pkt']).splitlines() if '`pkt`' in r)
  # Paired test differences (seed 0 is the sweep's run): 0.70−0.69, 0.75−0.72, 0.73−0.74 →
  # +1, +3, −1 pt.
  assert '70.00, 75.00, 73.00' in row and '(2/3)' in row and '1.00 ± 2.00' in row
  assert '| w=1 | 99.00 (n=1) |' in row  # the reference point: seed 0 only so far, and says so
  assert '**w=0.1: 82.00 (82.00)**' in tuned.sweep_table(str(tmp_path), ['pkt'])
