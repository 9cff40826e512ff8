"""launch.py itself, as a user runs it (a subprocess): a tiny KD run with flag overrides writes its
summary; a misspelled `--config.<field>` fails with one line and no traceback."""
import json
import os
import subprocess
import sys

import pytest

from conftest import REPO


def _launch(*args):
  # One device: the subprocess compiles less; sharding is covered in-process.
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=1')
  return subprocess.run([sys.executable, os.path.join(REPO, 'launch.py'), *args],
                        capture_output=True, text=True, env=env, cwd=REPO, timeout=300)


def test_launch_runs_a_config_with_overrides_and_writes_the_summary(tiny_data_dir, teacher_workdir,
                                                                    tmp_path):
  workdir = tmp_path / 'kd'
  proc = _launch('--config', 'configs/fashion_mnist/kd_student.py:tiny', f'--workdir={workdir}',
                 f'--config.data.data_dir={tiny_data_dir}',
                 f'--config.teacher.checkpoint={teacher_workdir}', '--config.total_steps=2',
                 '--config.seed=3')
  assert proc.returncode == 0, proc.stderr[-3000:]
  summary = json.load(open(workdir / 'summary.json'))
  # The overrides reached the run: 2 steps (not the tiny config's 6), the teacher evaluated.
  assert summary['step'] == 2 and summary['trainer'] == 'classification'
  assert [h['step'] for h in summary['eval_history']] == [2]
  assert {'eval/student_top1', 'eval/teacher_top1', 'eval/agreement'} <= set(summary['eval'])
  assert f'done: summary at {workdir}/summary.json' in proc.stdout
  assert 'step 2/2' in proc.stdout


def test_misspelled_override_fails_with_one_line_and_no_traceback(tmp_path):
  proc = _launch('--config', 'configs/fashion_mnist/kd_student.py:tiny',
                 f'--workdir={tmp_path / "w"}', '--config.totl_steps=3')
  assert proc.returncode != 0
  assert 'Traceback' not in proc.stderr
  lines = [l for l in proc.stderr.splitlines() if 'totl_steps' in l]
  assert len(lines) == 1 and 'total_steps' in lines[0], proc.stderr[-3000:]
  assert not os.path.exists(tmp_path / 'w')
