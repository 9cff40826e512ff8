"""Two processes on localhost (gloo CPU collectives) reach the same student as one process, 2 devices."""
import os
import socket
import subprocess
import sys

import numpy as np

from conftest import REPO
from kd_jax import checkpoint as ckpt_lib


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _cmd(workdir, data_dir, teacher, *extra):
  return [sys.executable, os.path.join(REPO, 'launch.py'),
          '--config', 'configs/fashion_mnist/kd_student.py:tiny', f'--workdir={workdir}',
          f'--config.data.data_dir={data_dir}', f'--config.teacher.checkpoint={teacher}',
          '--config.total_steps=4', '--config.checkpoint_every=2', *extra]


def _env(devices):
  return dict(os.environ, XLA_FLAGS=f'--xla_force_host_platform_device_count={devices}',
              TF_CPP_MIN_LOG_LEVEL='2')


def _export(workdir):
  import jax  # pylint: disable=import-outside-toplevel
  tree = ckpt_lib.load_export_numpy(workdir)
  return {jax.tree_util.keystr(k): np.asarray(v)
          for k, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


def test_two_processes_match_one_process_two_devices(tiny_data_dir, teacher_workdir, tmp_path):
  single = tmp_path / 'single'
  ref = subprocess.run(_cmd(single, tiny_data_dir, teacher_workdir), env=_env(2), cwd=REPO,
                       capture_output=True, text=True, timeout=600)
  assert ref.returncode == 0, ref.stderr[-3000:]

  multi = tmp_path / 'multi'
  port = _free_port()
  procs = [subprocess.Popen(
      _cmd(multi, tiny_data_dir, teacher_workdir, f'--coordinator_address=127.0.0.1:{port}',
           '--num_processes=2', f'--process_id={i}', '--cpu_collectives=gloo'),
      env=_env(1), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
      for i in range(2)]
  outs = [p.communicate(timeout=600) for p in procs]
  for p, (_, err) in zip(procs, outs):
    assert p.returncode == 0, err[-3000:]
  # Only process 0 writes the summary; both wrote the checkpoint the orbax multi-host way.
  assert (multi / 'summary.json').exists()
  assert 'summary at' in outs[0][0] and 'summary at' not in outs[1][0]
  a, b = _export(single), _export(multi)
  assert a.keys() == b.keys()
  for k in a:
    np.testing.assert_allclose(a[k], b[k], rtol=1e-5, atol=1e-6)
