"""launch.py itself, as a user runs it (a subprocess): a misspelled `--config.<field>` fails with one
line and no traceback. (A full run through launch.py with flag overrides is
tests/test_extension.py's README example.)"""
import os
import subprocess
import sys

from conftest import REPO


def _launch(*args):
  # One device: the subprocess compiles less; sharding is covered in-process.
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=1')
  return subprocess.run([sys.executable, os.path.join(REPO, 'launch.py'), *args],
                        capture_output=True, text=True, env=env, cwd=REPO, timeout=300)


def test_misspelled_override_fails_with_one_line_and_no_traceback(tmp_path):
  proc = _launch('--config', 'configs/fashion_mnist/kd_student.py:tiny',
                 f'--workdir={tmp_path / "w"}', '--config.totl_steps=3')
  assert proc.returncode != 0
  assert 'Traceback' not in proc.stderr
  lines = [l for l in proc.stderr.splitlines() if 'totl_steps' in l]
  assert len(lines) == 1 and 'total_steps' in lines[0], proc.stderr[-3000:]
  assert not os.path.exists(tmp_path / 'w')
