"""Quiet logs by default (kd_jax.quiet): known harmless warnings and INFO lines hidden, the progress
lines and kd_jax's own messages kept; --verbosity brings everything back."""
import logging as py_logging
import os
import subprocess
import sys

from conftest import REPO
from kd_jax import quiet


def _record(message, level=py_logging.WARNING):
  return py_logging.LogRecord('absl', level, 'x.py', 1, message, None, None)


def test_filter_drops_only_the_known_noise():
  f = quiet._DropNoise()
  assert not f.filter(_record('Metadata file does not exist: /w/checkpoints/4/export/_CHECKPOINT'))
  assert not f.filter(_record('Waiting for previous save to complete (asynchronous save).'))
  assert not f.filter(_record('OpenCV is not installed. We recommend using OpenCV'))
  assert not f.filter(_record('Variant folder /d/fashion_mnist/3.0.1 has no dataset_info.json'))
  assert f.filter(_record('kd_jax: the teacher cache was rebuilt'))


def test_launch_output_is_progress_lines_and_verbosity_restores_the_rest(teacher_workdir,
                                                                         tiny_data_dir, tmp_path):
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=2')
  env.pop('TF_CPP_MIN_LOG_LEVEL', None)  # launch.py must hide TensorFlow's lines itself
  cmd = [sys.executable, os.path.join(REPO, 'launch.py'), '--config',
         os.path.join(REPO, 'configs/fashion_mnist/kd_student.py:tiny'),
         f'--config.data.data_dir={tiny_data_dir}', f'--config.teacher.checkpoint={teacher_workdir}']
  quiet_run = subprocess.run(cmd + [f'--workdir={tmp_path / "quiet"}'], capture_output=True,
                             text=True, env=env, cwd=tmp_path, timeout=600)
  assert quiet_run.returncode == 0, quiet_run.stderr[-2000:]
  out = quiet_run.stdout + quiet_run.stderr
  lines = [l for l in out.splitlines() if l.strip()]
  # Every line is kd_jax's: progress lines and the closing one.
  assert all(l.startswith('[kd_jax]') for l in lines), [l for l in lines
                                                        if not l.startswith('[kd_jax]')][:5]
  assert sum(' step ' in l for l in lines) == 3  # 6 steps, log_every 2
  loud = subprocess.run(cmd + [f'--workdir={tmp_path / "loud"}', '--verbosity=0'],
                        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
  assert loud.returncode == 0, loud.stderr[-2000:]
  assert len((loud.stdout + loud.stderr).splitlines()) > len(lines) + 5
