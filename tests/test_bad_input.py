"""Bad input → one clear message naming the problem and the fix; nothing on disk damaged."""
import os
import subprocess
import sys

import pytest

from conftest import REPO, tiny_config
from kd_jax import errors
from kd_jax.trainers import classification






def _snapshot(root):
  out = {}
  for dirpath, _, files in os.walk(root):
    for f in files:
      p = os.path.join(dirpath, f)
      out[p] = open(p, 'rb').read()
  return out


def test_missing_teacher_checkpoint(tiny_data_dir, tmp_path):
  config = tiny_config('fashion_mnist/kd_student.py', tiny_data_dir,
                 **{'teacher.checkpoint': str(tmp_path / 'nope')})
  with pytest.raises(errors.CheckpointError, match='does not exist.*train the teacher first'):
    classification.train_and_evaluate(config, str(tmp_path / 'w'))


def test_teacher_model_config_not_matching_checkpoint(teacher_workdir, tiny_data_dir, tmp_path):
  before = _snapshot(teacher_workdir)
  config = tiny_config('fashion_mnist/kd_student.py', tiny_data_dir,
                 **{'teacher.checkpoint': teacher_workdir})
  model = dict(config.teacher.model)
  model['width'] = int(model.get('width', 16)) * 2
  config.teacher.model = model
  with pytest.raises(errors.CheckpointError, match='does not match the teacher model config.*'
                     'set config.teacher.model'):
    classification.train_and_evaluate(config, str(tmp_path / 'w'))
  assert _snapshot(teacher_workdir) == before


@pytest.mark.parametrize('field,value,match', [
    ('data.name', 'no_such_dataset', "unknown dataset 'no_such_dataset'"),
    ('model', {'name': 'no_such_model'}, "unknown model 'no_such_model'"),
    ('losses', [('no_such_loss', 1.0, {})], "unknown loss 'no_such_loss'"),
])
def test_unknown_names(tiny_data_dir, tmp_path, field, value, match):
  config = tiny_config('fashion_mnist/teacher.py', tiny_data_dir)
  config.unlock()
  target = config
  *path, last = field.split('.')
  for p in path:
    target = target[p]
  target[last] = value
  with pytest.raises(errors.ConfigError, match=match):
    classification.train_and_evaluate(config, str(tmp_path))


def test_misspelled_field_in_config(tiny_data_dir, tmp_path):
  config = tiny_config('fashion_mnist/teacher.py', tiny_data_dir)
  config.optimizer.learning_rte = 0.1
  with pytest.raises(errors.ConfigError, match=r"config.optimizer.learning_rte'.*learning_rate"):
    classification.train_and_evaluate(config, str(tmp_path))


def test_workdir_is_a_file(tiny_data_dir, tmp_path):
  path = tmp_path / 'file'
  path.write_text('keep me')
  with pytest.raises(errors.ConfigError, match='is a file'):
    classification.train_and_evaluate(tiny_config('fashion_mnist/teacher.py', tiny_data_dir), str(path))
  assert path.read_text() == 'keep me'


def test_existing_checkpoint_of_another_model_is_not_overwritten(teacher_workdir, tiny_data_dir):
  before = _snapshot(teacher_workdir)
  # A different student model launched into the teacher's workdir must refuse, not overwrite.
  config = tiny_config('fashion_mnist/kd_student.py', tiny_data_dir,
                 **{'teacher.checkpoint': teacher_workdir})
  with pytest.raises(errors.CheckpointError, match='new --workdir'):
    classification.train_and_evaluate(config, teacher_workdir)
  after = _snapshot(teacher_workdir)
  assert {k: v for k, v in after.items() if 'tfevents' not in k} == {
      k: v for k, v in before.items() if 'tfevents' not in k}


def _launch(*args):
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=1')
  return subprocess.run([sys.executable, os.path.join(REPO, 'launch.py'), *args],
                        capture_output=True, text=True, env=env, cwd=REPO, timeout=300)


def test_launch_reports_one_line_and_nonzero_exit(tmp_path):
  proc = _launch('--config', 'configs/fashion_mnist/kd_student.py:tiny',
                 f'--workdir={tmp_path / "w"}', f'--config.teacher.checkpoint={tmp_path / "nope"}')
  assert proc.returncode == 2
  lines = [l for l in proc.stderr.splitlines() if l.startswith('kd_jax: error:')]
  assert len(lines) == 1 and 'does not exist' in lines[0]


def test_misspelled_override_fails_with_one_line_and_no_traceback(tmp_path):
  proc = _launch('--config', 'configs/fashion_mnist/kd_student.py:tiny',
                 f'--workdir={tmp_path / "w"}', '--config.totl_steps=3')
  assert proc.returncode != 0
  assert 'Traceback' not in proc.stderr
  lines = [l for l in proc.stderr.splitlines() if 'totl_steps' in l]
  assert len(lines) == 1 and 'total_steps' in lines[0], proc.stderr[-3000:]
  assert not os.path.exists(tmp_path / 'w')
