"""The validation protocol: train on the first 90% of `train`, evaluate periodically on the held-out
10%, score the test split once at the end; and old run records still match new fields."""
import json
import os

import pytest

from conftest import TINY_TRAIN, tiny_config
from configs.fashion_mnist import common as fm_common
from kd_jax import data, run_identity
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
