"""End to end: teacher → frozen teacher → KD student; resume; 1 vs 8 devices; teacher unchanged."""
import glob
import json
import os

import jax
import numpy as np
import pytest

from conftest import tiny_config
from kd_jax import checkpoint as ckpt_lib
from kd_jax import data, parallel
from kd_jax.trainers import classification




def _export(workdir):
  return ckpt_lib.load_export_numpy(workdir)




def _flat(tree):
  return {jax.tree_util.keystr(k): np.asarray(v)
          for k, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


def test_teacher_run_writes_checkpoint_summary_and_events(teacher_workdir):
  summary = json.load(open(os.path.join(teacher_workdir, 'summary.json')))
  assert 0.0 <= summary['eval']['eval/student_top1'] <= 1.0
  assert summary['student']['params'] > 0 and summary['student']['flops_per_example'] > 0
  assert glob.glob(os.path.join(teacher_workdir, '**', 'events.out.tfevents.*'), recursive=True)
  exported = _export(teacher_workdir)
  assert set(exported) == {'model'} and 'params' in exported['model']


def test_kd_student_from_teacher_checkpoint_and_teacher_unchanged(teacher_workdir, tiny_data_dir,
                                                                  tmp_path):
  before = _flat(_export(teacher_workdir))
  config = tiny_config('fashion_mnist/kd_student.py', tiny_data_dir,
                 **{'teacher.checkpoint': teacher_workdir})
  summary = classification.train_and_evaluate(config, str(tmp_path))
  # The teacher's checkpoint is bitwise unchanged by distillation...
  after = _flat(_export(teacher_workdir))
  assert before.keys() == after.keys()
  for k in before:
    np.testing.assert_array_equal(before[k], after[k])
  # ...the student run evaluated it, and its own export holds only the student.
  assert 'eval/teacher_top1' in summary['eval'] and 'eval/agreement' in summary['eval']
  assert summary['teacher']['params'] > summary['student']['params']
  student_export = _flat(_export(str(tmp_path)))
  n_student = sum(v.size for k, v in student_export.items() if "'params'" in k)
  assert n_student == summary['student']['params']


def test_teacher_params_bitwise_unchanged_in_memory(teacher_workdir, tiny_data_dir, tmp_path,
                                                    monkeypatch):
  """The very arrays handed to the train step are the same bits after training."""
  from kd_jax import teacher as teacher_lib
  seen = {}
  real_restore = teacher_lib.restore_teacher

  def spy(*args, **kwargs):
    t = real_restore(*args, **kwargs)
    seen['before'] = _flat(jax.device_get(t.variables))
    seen['teacher'] = t
    return t

  monkeypatch.setattr(teacher_lib, 'restore_teacher', spy)
  config = tiny_config('fashion_mnist/kd_student.py', tiny_data_dir,
                 **{'teacher.checkpoint': teacher_workdir})
  classification.train_and_evaluate(config, str(tmp_path))
  after = _flat(jax.device_get(seen['teacher'].variables))
  for k, v in seen['before'].items():
    np.testing.assert_array_equal(v, after[k])


class _Preempted(Exception):
  pass


def test_resume_continues_from_saved_step(teacher_workdir, tiny_data_dir, tmp_path, capsys,
                                          monkeypatch):
  kw = {'teacher.checkpoint': teacher_workdir, 'checkpoint_every': 3, 'log_every': 3,
        'total_steps': 6}
  straight = str(tmp_path / 'straight')
  classification.train_and_evaluate(tiny_config('fashion_mnist/kd_student.py', tiny_data_dir, **kw),
                                    straight)
  # Preempt the same run while it fetches the batch of step 5 (step 3 is checkpointed)...
  real_iterator = data.train_iterator

  def preempting_iterator(*args, **kwargs):
    it = real_iterator(*args, **kwargs)
    calls = {'n': 0}

    class Wrapped:
      def __iter__(self):
        return self

      def __next__(self):
        calls['n'] += 1
        if calls['n'] == 5:
          raise _Preempted()
        return next(it)

      def get_state(self):
        return it.get_state()

      def set_state(self, state):
        it.set_state(state)
    return Wrapped()

  resumed = str(tmp_path / 'resumed')
  monkeypatch.setattr(data, 'train_iterator', preempting_iterator)
  with pytest.raises(_Preempted):
    classification.train_and_evaluate(
        tiny_config('fashion_mnist/kd_student.py', tiny_data_dir, **kw), resumed)
  monkeypatch.setattr(data, 'train_iterator', real_iterator)
  capsys.readouterr()
  # ...then relaunch the same command: it resumes at step 3 and ends where the straight run did.
  classification.train_and_evaluate(tiny_config('fashion_mnist/kd_student.py', tiny_data_dir, **kw),
                                    resumed)
  assert 'from step 3' in capsys.readouterr().out
  a, b = _flat(_export(straight)), _flat(_export(resumed))
  for k in a:
    np.testing.assert_allclose(a[k], b[k], rtol=1e-6, atol=1e-7)


def test_one_device_and_eight_devices_give_the_same_params(teacher_workdir, tiny_data_dir,
                                                           tmp_path, monkeypatch):
  assert jax.device_count() == 8
  results = {}
  for n in (1, 8):
    monkeypatch.setattr(parallel, 'make_mesh',
                        lambda devices=None, n=n: parallel.Mesh(
                            np.asarray(jax.devices()[:n]), (parallel.DATA_AXIS,)))
    workdir = str(tmp_path / f'd{n}')
    classification.train_and_evaluate(
        tiny_config('fashion_mnist/kd_student.py', tiny_data_dir,
              **{'teacher.checkpoint': teacher_workdir, 'total_steps': 4}), workdir)
    results[n] = _flat(_export(workdir))
  assert any('batch_stats' in k for k in results[1]), 'student should have BatchNorm'
  for k in results[1]:
    # BatchNorm statistics included: under jit the batch mean over a sharded batch is global.
    np.testing.assert_allclose(results[1][k], results[8][k], rtol=2e-4, atol=2e-5)
