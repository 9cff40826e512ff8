"""End to end: teacher → frozen teacher → KD student (closer to the teacher than the scratch
student); resume; 1 vs 8 devices; teacher checkpoint unchanged. (That the step never changes or
differentiates the teacher it is handed: tests/test_steps.py.)"""
import glob
import json
import os

import jax
import numpy as np
import pytest

from conftest import Preempted, preempting_iterator, tiny_config
from conftest import flat_tree as _flat
from kd_jax import checkpoint as ckpt_lib
from kd_jax import config_utils, data, parallel
from kd_jax.metrics import classification as cls_metrics
from kd_jax.trainers import classification


def _export(workdir):
  return ckpt_lib.load_export_numpy(workdir)


def _eval_logits(workdir, model_config, data_dir):
  """Logits of a run's exported model on the whole eval split, recomputed here from the export."""
  source = data.get_source('fashion_mnist', 'test', data_dir=data_dir)
  images = np.stack([np.asarray(source[i]['image']) for i in range(len(source))])
  labels = np.asarray([int(source[i]['label']) for i in range(len(source))])
  model = config_utils.build_model(model_config, 'model')
  logits = model.apply(_export(workdir)['model'], images.astype(np.float32) / 127.5 - 1.0,
                       train=False)
  return np.asarray(logits), labels


def test_teacher_run_writes_checkpoint_summary_and_events(teacher_workdir, tiny_data_dir):
  summary = json.load(open(os.path.join(teacher_workdir, 'summary.json')))
  # The reported top-1 is the exported model's on the eval split, recomputed from the export.
  logits, labels = _eval_logits(teacher_workdir, tiny_config('fashion_mnist/teacher.py', '').model,
                                tiny_data_dir)
  assert summary['eval']['eval/student_top1'] == pytest.approx(np.mean(logits.argmax(-1) == labels),
                                                               abs=1e-9)
  assert summary['student']['params'] > 0 and summary['student']['flops_per_example'] > 0
  assert glob.glob(os.path.join(teacher_workdir, '**', 'events.out.tfevents.*'), recursive=True)
  exported = _export(teacher_workdir)
  assert set(exported) == {'model'} and 'params' in exported['model']


def test_kd_student_follows_the_teacher_closer_than_scratch_and_leaves_it_unchanged(
    teacher_workdir, tiny_data_dir, tmp_path):
  """Same student, steps and seed: trained on the KD term alone it agrees with the teacher far more
  than trained on labels alone (the tiny teacher is poor, so the two targets differ). Measured on
  seeds 0-2 (30 steps): KD 0.66-0.86 agreement, labels 0.07-0.18."""
  before = _flat(_export(teacher_workdir))
  agreement = {}
  for name, losses in (('kd', [('kd', 1.0, {'temperature': 1.0})]), ('scratch', [('ce', 1.0, {})])):
    # The scratch student gets the teacher too, only so the evaluation reports its agreement.
    config = tiny_config('fashion_mnist/kd_student.py', tiny_data_dir, **{
        'teacher.checkpoint': teacher_workdir, 'total_steps': 30, 'log_every': 30,
        'checkpoint_every': 30, 'optimizer.learning_rate': 1e-2})
    config.losses = losses
    summary = classification.train_and_evaluate(config, str(tmp_path / name))
    agreement[name] = summary['eval']['eval/agreement']
    if name == 'kd':
      kd_summary, kd_config = summary, config
  assert agreement['kd'] > agreement['scratch'] + 0.3, agreement
  # The reported agreement is the exported student's with the exported teacher, recomputed.
  s_logits, labels = _eval_logits(str(tmp_path / 'kd'), kd_config.model, tiny_data_dir)
  t_logits, _ = _eval_logits(teacher_workdir, kd_config.teacher.model, tiny_data_dir)
  assert agreement['kd'] == pytest.approx(
      float(np.mean(cls_metrics.agreement(s_logits, t_logits))), abs=1e-9)
  assert kd_summary['eval']['eval/teacher_top1'] == pytest.approx(
      np.mean(t_logits.argmax(-1) == labels), abs=1e-9)
  # The teacher's checkpoint is bitwise unchanged by distillation...
  after = _flat(_export(teacher_workdir))
  assert before.keys() == after.keys()
  for k in before:
    np.testing.assert_array_equal(before[k], after[k])
  # ...and the student run's export holds only the student.
  assert kd_summary['teacher']['params'] > kd_summary['student']['params']
  student_export = _flat(_export(str(tmp_path / 'kd')))
  assert {k.split("']")[0] for k in student_export} == {"['model"}
  n_student = sum(v.size for k, v in student_export.items() if "'params'" in k)
  assert n_student == kd_summary['student']['params']


def test_resume_continues_from_saved_step(teacher_workdir, tiny_data_dir, tmp_path, capsys,
                                          monkeypatch):
  kw = {'teacher.checkpoint': teacher_workdir, 'checkpoint_every': 3, 'log_every': 3,
        'total_steps': 6}
  straight = str(tmp_path / 'straight')
  classification.train_and_evaluate(tiny_config('fashion_mnist/kd_student.py', tiny_data_dir, **kw),
                                    straight)
  # Preempt the same run while it fetches the batch of step 5 (step 3 is checkpointed)...
  real_iterator = data.train_iterator
  resumed = str(tmp_path / 'resumed')
  monkeypatch.setattr(data, 'train_iterator', preempting_iterator(real_iterator, 5))
  with pytest.raises(Preempted):
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
    # XLA:CPU's Eigen convs (kd_jax/xla_cpu.py) sum in another order for 16 vs 128 examples per
    # device, and 4 Adam steps carry that rounding (seen: 6e-5 on a 0.08 weight); a per-device
    # BatchNorm or a wrong gradient mean moves params by far more than 1e-3 of their scale.
    scale = float(np.abs(results[1][k]).max())
    np.testing.assert_allclose(results[1][k], results[8][k], rtol=2e-4, atol=max(2e-5, 1e-3 * scale),
                               err_msg=k)
