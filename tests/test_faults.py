"""Faults a long run meets: SIGTERM (one and two processes), divergence, damaged checkpoints, a
workdir of another run, and loop fields out of range. (Random SIGKILLs: benchmarks/fault_injection.py,
`make faults`.)"""
import glob
import os
import re
import shutil
import signal
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from conftest import REPO, shared_dir, tiny_config
from conftest import flat_tree as _flat
from kd_jax import checkpoint as ckpt_lib
from kd_jax import errors, parallel
from kd_jax.trainers import classification, loop

SCRATCH = 'configs/fashion_mnist/scratch_student.py:tiny'
# A constant schedule makes a run's steps independent of total_steps, so a run preempted while
# aiming at many steps can be finished at a chosen step and compared with an uninterrupted one.
CONSTANT = {'optimizer.schedule': 'constant'}


def _config(data_dir, **fields):
  return tiny_config('fashion_mnist/scratch_student.py', data_dir, **{**CONSTANT, **fields})


def _assert_bitwise(a_workdir, b_workdir):
  a, b = (_flat(ckpt_lib.load_export_numpy(w)) for w in (a_workdir, b_workdir))
  assert a.keys() == b.keys()
  for k in a:
    assert np.array_equal(a[k], b[k]), k


def _steps_on_disk(workdir):
  return sorted(int(os.path.basename(p)) for p in glob.glob(f'{workdir}/checkpoints/*')
                if os.path.basename(p).isdigit())


def _launch_cmd(workdir, data_dir, *extra):
  return [sys.executable, os.path.join(REPO, 'launch.py'), '--config', SCRATCH,
          f'--workdir={workdir}', f'--config.data.data_dir={data_dir}',
          '--config.optimizer.schedule=constant', '--config.log_every=1', *extra]


def _env(devices):
  return dict(os.environ, XLA_FLAGS=f'--xla_force_host_platform_device_count={devices}',
              TF_CPP_MIN_LOG_LEVEL='2')


def _read_through_step(proc, step):
  """The process's output lines up to the progress line of `step` (or to its end, if it ends first).

  Reads the pipe line by line, so the signal that follows lands after that step has run.
  """
  lines = []
  for line in proc.stdout:
    lines.append(line)
    if re.match(rf'\[kd_jax\] step {step}/', line):
      break
  return lines


# --- SIGTERM -----------------------------------------------------------------------------------

def test_sigterm_saves_the_current_step_and_resume_is_bitwise(tiny_data_dir, tmp_path):
  workdir = tmp_path / 'preempted'
  # Many steps with checkpoints far apart: without the handler the signal would lose them all.
  proc = subprocess.Popen(_launch_cmd(workdir, tiny_data_dir, '--config.total_steps=100000',
                                      '--config.checkpoint_every=50000'),
                          env=_env(2), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True)
  lines = _read_through_step(proc, 3)
  proc.send_signal(signal.SIGTERM)
  text = ''.join(lines) + proc.communicate(timeout=120)[0]
  assert proc.returncode == 128 + signal.SIGTERM, text[-3000:]
  match = re.search(r'preempted \(SIGTERM\) at step (\d+): checkpoint saved', text)
  assert match, text[-3000:]
  saved = int(match.group(1))
  last_printed = max(int(s) for s in re.findall(r'\[kd_jax\] step (\d+)/', text))
  assert saved >= last_printed >= 3  # no step that ran is lost
  assert _steps_on_disk(workdir) == [1, saved]  # orbax's first-step save, then the preemption's

  # Resume (total_steps may change: extend to a few steps past the preemption) == uninterrupted,
  # both as launch.py processes like the preempted one (same devices, same compiled programs).
  total = saved + 3
  finish = ['--config.checkpoint_every=50000', f'--config.total_steps={total}']
  resumed = subprocess.run(_launch_cmd(workdir, tiny_data_dir, *finish), env=_env(2), cwd=REPO,
                           capture_output=True, text=True, timeout=300)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert f'resuming {workdir} from step {saved}' in resumed.stdout
  straight = tmp_path / 'straight'
  ref = subprocess.run(_launch_cmd(straight, tiny_data_dir, *finish), env=_env(2), cwd=REPO,
                       capture_output=True, text=True, timeout=300)
  assert ref.returncode == 0, ref.stderr[-3000:]
  _assert_bitwise(str(workdir), str(straight))


def _free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def test_sigterm_to_one_of_two_processes_saves_the_same_step_on_both(tiny_data_dir, tmp_path):
  workdir, port = tmp_path / 'multi', _free_port()
  log1 = tmp_path / 'out1.txt'
  with open(log1, 'w') as out1:
    # Process 0's output through a pipe (read to know when to signal), process 1's to a file.
    procs = [subprocess.Popen(
        _launch_cmd(workdir, tiny_data_dir, '--config.total_steps=100000',
                    '--config.checkpoint_every=50000', f'--coordinator_address=127.0.0.1:{port}',
                    '--num_processes=2', f'--process_id={i}', '--cpu_collectives=gloo'),
        env=_env(1), cwd=REPO, stdout=subprocess.PIPE if i == 0 else out1,
        stderr=subprocess.STDOUT, text=True) for i in range(2)]
    try:
      lines = _read_through_step(procs[0], 3)
      procs[1].send_signal(signal.SIGTERM)  # only one host is told, as on a pod
      text0 = ''.join(lines) + procs[0].communicate(timeout=180)[0]
      procs[1].wait(timeout=180)
    finally:
      for p in procs:
        if p.poll() is None:
          p.kill()
  texts = [text0, log1.read_text()]
  assert [p.returncode for p in procs] == [143, 143], texts[0][-2000:] + texts[1][-2000:]
  saved = int(re.search(r'preempted \(SIGTERM\) at step (\d+)', texts[0]).group(1))
  last_printed = max(int(s) for s in re.findall(r'\[kd_jax\] step (\d+)/', texts[0]))
  assert saved >= last_printed
  assert _steps_on_disk(workdir) == [1, saved]


# --- divergence ----------------------------------------------------------------------------------

def test_nonfinite_training_stops_and_never_reaches_disk(tiny_data_dir, tmp_path):
  workdir = str(tmp_path / 'diverged')
  config = _config(tiny_data_dir, total_steps=40, checkpoint_every=1, keep_checkpoints=100,
                   log_every=100, **{'optimizer.name': 'sgd', 'optimizer.learning_rate': 1e6})
  with pytest.raises(errors.DivergedError, match=r'diverged at step (\d+)') as info:
    classification.train_and_evaluate(config, workdir)
  bad_step = int(re.search(r'at step (\d+)', str(info.value)).group(1))
  steps = _steps_on_disk(workdir)
  assert steps and max(steps) < bad_step
  assert f'the newest checkpoint, step {max(steps)}, is finite' in str(info.value)
  for step in steps:
    for name, leaf in _flat(ckpt_lib.load_item_numpy(f'{workdir}/checkpoints/{step}/state')).items():
      if np.issubdtype(leaf.dtype, np.floating):
        assert np.isfinite(leaf).all(), (step, name)
  assert not os.path.exists(f'{workdir}/summary.json')


def test_divergence_message_names_the_weighted_term(tiny_data_dir, tmp_path):
  config = _config(tiny_data_dir, total_steps=20, log_every=100, checkpoint_every=100)
  config.losses = [('ce', 1e30, {})]
  with pytest.raises(errors.DivergedError) as info:
    classification.train_and_evaluate(config, str(tmp_path / 'w'))
  message = str(info.value)
  assert '\n' not in message
  # The loss is finite (1e30 · ~2.3 fits float32), its gradient is not: the term must be named.
  assert re.search(r'ce=\S+e\+30 \(raw \S+\)', message), message


def test_finite_flags_see_a_nonfinite_state_with_finite_metrics():
  def step(state, teacher, batch, rng):
    del teacher, batch, rng
    return {'w': state['w'] * np.float32(1e30) * np.float32(1e30)}, {'loss': state['w'].sum()}
  flagged = jax.jit(loop._with_finite_flags(step))  # pylint: disable=protected-access
  _, _, finite = flagged({'w': np.ones(3, np.float32), 'step': np.int32(0)}, {}, {}, None)
  assert finite.tolist() == [True, False]


# --- damaged checkpoints -----------------------------------------------------------------------

def _truncate(paths):
  for p in paths:
    with open(p, 'r+b') as f:
      f.truncate(os.path.getsize(p) // 2)


def _damage(step_dir, mode):
  if mode == 'truncated_arrays':
    _truncate([p for p in glob.glob(f'{step_dir}/state/**/d/*', recursive=True)
               if os.path.isfile(p)])
  elif mode == 'empty_manifest':
    open(f'{step_dir}/state/manifest.ocdbt', 'w').close()
  elif mode == 'missing_metadata':
    os.remove(f'{step_dir}/state/_METADATA')
  elif mode == 'empty_step_dir':
    for p in os.listdir(step_dir):
      shutil.rmtree(os.path.join(step_dir, p), ignore_errors=True)
      if os.path.exists(os.path.join(step_dir, p)):
        os.remove(os.path.join(step_dir, p))
  elif mode == 'truncated_export':
    _truncate([p for p in glob.glob(f'{step_dir}/export/**/d/*', recursive=True)
               if os.path.isfile(p)])


@pytest.fixture(scope='module')
def finished_run(tiny_data_dir, tmp_path_factory):
  """A 20-step run with checkpoints 10, 15, 20, and the same run straight to 25 steps."""
  kw = dict(checkpoint_every=5, keep_checkpoints=3, log_every=100)

  def build(root):
    # Module-scoped fixtures run before the autouse 2-device mesh: use the same mesh as the tests.
    real = parallel.make_mesh
    with pytest.MonkeyPatch.context() as patch:
      patch.setattr(parallel, 'make_mesh', lambda devices=None: real(jax.devices()[:2]))
      classification.train_and_evaluate(_config(tiny_data_dir, total_steps=20, **kw),
                                        str(root / 'run'))
      classification.train_and_evaluate(_config(tiny_data_dir, total_steps=25, **kw),
                                        str(root / 'straight'))
  root = shared_dir(tmp_path_factory, 'finished', build)
  return os.path.join(root, 'run'), os.path.join(root, 'straight'), kw


@pytest.mark.parametrize('mode', ['truncated_arrays', 'empty_manifest', 'missing_metadata',
                                  'empty_step_dir', 'truncated_export'])
def test_damaged_newest_checkpoint_falls_back_to_the_previous_step(finished_run, tiny_data_dir,
                                                                   tmp_path, capsys, mode):
  run, straight, kw = finished_run
  workdir = str(tmp_path / 'copy')
  shutil.copytree(run, workdir)
  _damage(f'{workdir}/checkpoints/20', mode)
  damaged_files = sorted(os.path.relpath(p, f'{workdir}/checkpoints/20')
                         for p in glob.glob(f'{workdir}/checkpoints/20/**', recursive=True))
  capsys.readouterr()
  # One mode trains on and is compared bitwise; the others only restore (no step to compile).
  total = 25 if mode == 'truncated_arrays' else 15
  classification.train_and_evaluate(_config(tiny_data_dir, total_steps=total, **kw), workdir)
  out = capsys.readouterr().out
  assert re.search(r'checkpoint step 20 is damaged \(.+\); moved it to \S+checkpoints_damaged/20',
                   out), out
  assert f'resuming {workdir} from step 15' in out
  # Nothing deleted: the damaged step is kept whole beside the checkpoints.
  kept = sorted(os.path.relpath(p, f'{workdir}/checkpoints_damaged/20')
                for p in glob.glob(f'{workdir}/checkpoints_damaged/20/**', recursive=True))
  assert kept == damaged_files
  if total == 25:
    _assert_bitwise(workdir, straight)


def test_all_checkpoints_damaged_is_one_error_and_nothing_moves(finished_run, tiny_data_dir,
                                                                tmp_path):
  run, _, kw = finished_run
  workdir = str(tmp_path / 'copy')
  shutil.copytree(run, workdir)
  for step in _steps_on_disk(workdir):
    _damage(f'{workdir}/checkpoints/{step}', 'empty_manifest')
  before = sorted(glob.glob(f'{workdir}/**', recursive=True))
  with pytest.raises(errors.CheckpointError, match='no checkpoint in .* can be restored'):
    classification.train_and_evaluate(_config(tiny_data_dir, total_steps=25, **kw), workdir)
  assert sorted(glob.glob(f'{workdir}/**', recursive=True)) == before


# --- run identity --------------------------------------------------------------------------------

def _contents(workdir):
  out = {}
  for p in glob.glob(f'{workdir}/**', recursive=True):
    if os.path.isfile(p) and 'tfevents' not in p:
      out[p] = open(p, 'rb').read()
  return out


@pytest.mark.parametrize('change, field', [
    ({'seed': 1}, 'config.seed'),  # same shapes: used to "resume" and overwrite the summary
    ({'losses': [('ce', 1.0, {'label_smoothing': 0.1})]}, 'config.losses'),
    ({'model.width': 8}, 'config.model.width'),
])
def test_another_config_is_refused_and_nothing_is_overwritten(finished_run, tiny_data_dir, tmp_path,
                                                              change, field):
  run, _, kw = finished_run
  workdir = str(tmp_path / 'copy')
  shutil.copytree(run, workdir)
  before = _contents(workdir)
  config = _config(tiny_data_dir, total_steps=20, **kw)
  for k, v in change.items():
    if k == 'losses':
      config.losses = v
    else:
      from kd_jax import config_utils  # pylint: disable=import-outside-toplevel
      config_utils.set_dotted(config, k, v)
  with pytest.raises(errors.CheckpointError, match=rf'different run \({re.escape(field)}:'):
    classification.train_and_evaluate(config, workdir)
  assert _contents(workdir) == before


def test_the_identity_is_also_checked_from_the_checkpoints(finished_run, tiny_data_dir, tmp_path):
  # A workdir whose run record is gone (e.g. checkpoints copied elsewhere) is still refused.
  run, _, kw = finished_run
  workdir = str(tmp_path / 'copy')
  shutil.copytree(run, workdir)
  os.remove(f'{workdir}/run_config.json')
  with pytest.raises(errors.CheckpointError, match=r'checkpoint .*20 belongs to a different run'):
    classification.train_and_evaluate(_config(tiny_data_dir, total_steps=25, seed=5, **kw), workdir)


def test_extending_a_run_and_changing_its_cadence_is_allowed(finished_run, tiny_data_dir, tmp_path,
                                                             capsys):
  run, straight, _ = finished_run
  workdir = str(tmp_path / 'copy')
  shutil.copytree(run, workdir)
  capsys.readouterr()
  classification.train_and_evaluate(
      _config(tiny_data_dir, total_steps=25, checkpoint_every=7, keep_checkpoints=1, log_every=2),
      workdir)
  assert f'resuming {workdir} from step 20' in capsys.readouterr().out
  _assert_bitwise(workdir, straight)


def test_a_run_cannot_be_shortened(finished_run, tiny_data_dir, tmp_path):
  run, _, kw = finished_run
  workdir = str(tmp_path / 'copy')
  shutil.copytree(run, workdir)
  with pytest.raises(errors.ConfigError, match=r'config.total_steps=12 is below .*\(20\)'):
    classification.train_and_evaluate(_config(tiny_data_dir, total_steps=12, **kw), workdir)


# --- loop fields -------------------------------------------------------------------------------

@pytest.mark.parametrize('field, value', [
    ('total_steps', 0), ('total_steps', -5), ('log_every', 0), ('checkpoint_every', 0),
    ('keep_checkpoints', 0), ('eval_every', -1), ('total_steps', 2.5), ('log_every', True),
])
def test_loop_fields_out_of_range(field, value):
  fields = dict(seed=0, total_steps=10, log_every=1, eval_every=0, checkpoint_every=5,
                keep_checkpoints=2)
  loop.Settings('classification', **fields)  # in range
  with pytest.raises(errors.ConfigError, match=rf'config\.{field}={value!r} must be'):
    loop.Settings('classification', **{**fields, field: value})
