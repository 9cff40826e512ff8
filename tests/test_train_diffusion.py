"""Tiny end-to-end runs of the diffusion trainers: the EDM teacher, then every distillation mode
(architecture compression, consistency with L2 and with the LPIPS-style metric, DMD2, the
progressive chain) from it; the teacher never changes; bitwise resume; bad configs fail clearly."""
import glob
import json
import os
import pathlib

import numpy as np
import pytest

from conftest import Preempted, preempting_iterator, load_config, shared_dir, tiny_config
from conftest import flat_tree as _flat
from kd_jax import checkpoint as ckpt_lib
from kd_jax import data, errors
from kd_jax.trainers import diffusion, progressive


def _summary(workdir):
  with open(os.path.join(workdir, 'summary.json')) as f:
    return json.load(f)


@pytest.fixture(scope='module')
def edm_teacher(tiny_data_dir, teacher_workdir, tmp_path_factory):
  def build(root):
    summary = diffusion.train_and_evaluate(
        tiny_config('fashion_mnist/edm_teacher.py', tiny_data_dir,
                    **{'eval.classifier_checkpoint': teacher_workdir}), str(root / 'run'))
    assert summary['step'] == 4
  return os.path.join(shared_dir(tmp_path_factory, 'edm_teacher', build), 'run')


def test_edm_teacher_exports_a_denoiser_with_quality_and_grids(edm_teacher):
  exported = ckpt_lib.load_export_numpy(edm_teacher)
  assert set(exported) == {'denoiser'}
  summary = _summary(edm_teacher)
  q = summary['student']['quality']['2']  # the teacher's own 2-step Heun samples (tiny)
  assert q['num_samples'] == 128 and np.isfinite(q['fid'])
  cost = summary['student']['cost']['2']
  assert cost['nfe'] == 3 and cost['flops_per_image'] == 3 * cost['flops_per_nfe'] > 0
  assert glob.glob(os.path.join(edm_teacher, 'images', 'final_teacher_vs_student_*.png'))


def _distil(cfg, tiny_data_dir, teacher, classifier, workdir, **fields):
  config = tiny_config(cfg, tiny_data_dir, **{'teacher.checkpoint': teacher,
                                              'eval.classifier_checkpoint': classifier, **fields})
  return config, diffusion.train_and_evaluate(config, workdir)


@pytest.fixture(scope='module')
def dmd_run(edm_teacher, teacher_workdir, tiny_data_dir, tmp_path_factory):
  """One straight tiny DMD run: checked like the other modes and the reference of its resume."""
  before = _flat(ckpt_lib.load_export_numpy(edm_teacher))

  def build(root):
    diffusion.train_and_evaluate(tiny_config('fashion_mnist/edm_dmd.py', tiny_data_dir,
                                             **_dmd_fields(edm_teacher, teacher_workdir)),
                                 str(root / 'run'))
  return os.path.join(shared_dir(tmp_path_factory, 'edm_dmd', build), 'run'), before


def _dmd_fields(edm_teacher, teacher_workdir):
  return {'teacher.checkpoint': edm_teacher, 'eval.classifier_checkpoint': teacher_workdir}


# Plain (L2) consistency distillation runs end to end in tests/test_demo.py (the demo's diffusion
# stage); its LPIPS variant here exercises the same mode plus the critic.
@pytest.mark.parametrize('cfg', ['edm_compress.py', 'edm_consistency.py:lpips', 'edm_dmd.py'])
def test_distillation_modes(edm_teacher, teacher_workdir, tiny_data_dir, tmp_path, cfg, request):
  before = _flat(ckpt_lib.load_export_numpy(edm_teacher))
  path, _, variant = cfg.partition(':')
  config = tiny_config(f'fashion_mnist/{path}', tiny_data_dir, **{
      'teacher.checkpoint': edm_teacher, 'eval.classifier_checkpoint': teacher_workdir})
  if path == 'edm_dmd.py':
    workdir, before = request.getfixturevalue('dmd_run')
    tmp_path = pathlib.Path(workdir)
  elif variant:
    config = load_config(f'fashion_mnist/{path}', f'{variant},tiny')
    config.data.data_dir = tiny_data_dir
    config.teacher.checkpoint = edm_teacher
    config.eval.classifier_checkpoint = teacher_workdir
    config.frozen_net.checkpoint = teacher_workdir
  if path != 'edm_dmd.py':
    summary = diffusion.train_and_evaluate(config, str(tmp_path))
    assert summary['step'] == 4
  # The teacher's export is bitwise unchanged.
  after = _flat(ckpt_lib.load_export_numpy(edm_teacher))
  for k in before:
    np.testing.assert_array_equal(before[k], after[k])
  student = _flat(ckpt_lib.load_export_numpy(str(tmp_path)))
  full = _summary(str(tmp_path))
  if config.mode == 'compress':
    # A smaller denoiser: no adapters in the export, fewer params than the teacher.
    assert not any('adapter' in k for k in student)
    n = full['student']['cost']['2']['params']
    assert n < full['teacher']['reference']['params']
    assert set(full['student']['vs_teacher']['2']) >= {'psnr', 'ssim'}
  else:
    # Consistency and DMD start from the teacher's weights (same keys, same shapes) and move away.
    assert student.keys() == before.keys()
    assert any(not np.array_equal(student[k], before[k]) for k in student)
    assert set(full['student']['quality']) == ({'1'} if config.mode == 'dmd' else {'1', '2'})
    # The baseline a 1-step student must beat: the teacher itself at 1 and 2 steps.
    assert {'euler_1', 'euler_2'} <= set(full['teacher']['quality'])
    assert full['student']['cost']['1']['nfe'] == 1


def test_progressive_chain_halves_steps_and_resumes_finished_rounds(
    edm_teacher, teacher_workdir, tiny_data_dir, tmp_path, capsys):
  config = tiny_config('fashion_mnist/edm_progressive.py', tiny_data_dir, **{
      'teacher.checkpoint': edm_teacher, 'eval.classifier_checkpoint': teacher_workdir})
  summary = progressive.train_and_evaluate(config, str(tmp_path))
  assert summary['rounds'] == [2, 1]
  r2, r1 = (_summary(str(tmp_path / f'steps_{n}')) for n in (2, 1))
  # Round k's teacher is round k−1's student; round 1 also scores the teacher at every count.
  assert r2['teacher']['checkpoint'] == edm_teacher
  assert r1['teacher']['checkpoint'] == str(tmp_path / 'steps_2')
  assert {'euler_4', 'euler_2', 'euler_1'} <= set(r2['teacher']['quality'])
  assert r1['student']['cost']['1']['nfe'] == 1 and r2['student']['cost']['2']['nfe'] == 2
  # Rerunning the command trains nothing: finished rounds are read back.
  before = _flat(ckpt_lib.load_export_numpy(str(tmp_path / 'steps_1')))
  capsys.readouterr()
  again = progressive.train_and_evaluate(config, str(tmp_path))
  assert '[kd_jax] step' not in capsys.readouterr().out  # no round trains again
  assert json.dumps(again['results'], sort_keys=True, default=str) == json.dumps(
      summary['results'], sort_keys=True, default=str)
  after = _flat(ckpt_lib.load_export_numpy(str(tmp_path / 'steps_1')))
  for k in before:
    np.testing.assert_array_equal(before[k], after[k])


def test_dmd_resume_is_bitwise(dmd_run, edm_teacher, teacher_workdir, tiny_data_dir, tmp_path,
                               capsys, monkeypatch):
  """Student, EMA and DMD's fake denoiser with its optimizer state all come back from the
  checkpoint: the resumed run's last steps read the fake denoiser, so a wrong one would change
  the result."""
  # Both halves skip the evaluation's FIDs and teacher baselines (only the exports are compared):
  # identical in the preempted and the resumed run, so the resume is allowed.
  kw = {**_dmd_fields(edm_teacher, teacher_workdir), 'eval.classifier_checkpoint': '',
        'eval.teacher_steps': []}
  straight = dmd_run[0]
  real_iterator = data.train_iterator
  resumed = str(tmp_path / 'resumed')
  monkeypatch.setattr(data, 'train_iterator', preempting_iterator(real_iterator, 4))
  with pytest.raises(Preempted):
    diffusion.train_and_evaluate(
        tiny_config('fashion_mnist/edm_dmd.py', tiny_data_dir, **kw), resumed)
  monkeypatch.setattr(data, 'train_iterator', real_iterator)
  capsys.readouterr()
  diffusion.train_and_evaluate(tiny_config('fashion_mnist/edm_dmd.py', tiny_data_dir, **kw),
                               resumed)
  assert 'from step 2' in capsys.readouterr().out
  a, b = _flat(ckpt_lib.load_export_numpy(straight)), _flat(ckpt_lib.load_export_numpy(resumed))
  assert a.keys() == b.keys()
  for k in a:
    np.testing.assert_array_equal(a[k], b[k])


@pytest.mark.parametrize('fields,match', [
    ({'mode': 'compress', 'teacher.checkpoint': ''}, 'config.teacher.checkpoint'),
    ({'mode': 'teacher'}, 'trains from data only'),
    ({'mode': 'consistency', 'model': {'name': 'edm_unet', 'channels': 2, 'channel_mult': [1]}},
     "teacher's architecture"),
    ({'mode': 'progressive', 'progressive.student_steps': 0}, 'config.progressive.student_steps'),
    ({'consistency.target_ema': 1.0}, 'consistency.target_ema'),
    ({'mode': 'dmd', 'dmd.min_position': 0.9, 'dmd.max_position': 0.5}, 'config.dmd.min_position'),
    ({'eval.sampler': 'rk4'}, 'config.eval.sampler'),
])
def test_bad_diffusion_configs(edm_teacher, tiny_data_dir, tmp_path, fields, match):
  config = tiny_config('fashion_mnist/edm_consistency.py', tiny_data_dir,
                       **{'teacher.checkpoint': edm_teacher, 'eval.classifier_checkpoint': ''})
  for key, value in fields.items():
    if key == 'model':
      config.model = value
    else:
      from kd_jax import config_utils  # pylint: disable=import-outside-toplevel
      config_utils.set_dotted(config, key, value)
  with pytest.raises(errors.ConfigError, match=match):
    diffusion.train_and_evaluate(config, str(tmp_path / 'run'))
  assert not os.path.exists(tmp_path / 'run' / 'checkpoints')


@pytest.mark.parametrize('start,end', [(6, 1), (4, 4), (1, 1)])
def test_progressive_chain_rejects_counts_that_do_not_halve(start, end):
  with pytest.raises(errors.ConfigError, match='start_steps'):
    progressive.rounds(start, end)


def test_diffusion_study_tables_plots_and_grids_the_runs(dmd_run, edm_teacher, tmp_path, capsys):
  """`kd_jax.report.diffusion_study`: the teacher at its own sampler and at the student's step
  counts, the student, ratios against the teacher's full sampler, a plot, a grid row per point."""
  from PIL import Image  # pylint: disable=import-outside-toplevel
  from kd_jax.report import diffusion_study  # pylint: disable=import-outside-toplevel
  workdir = dmd_run[0]
  t_points, students = diffusion_study.collect([workdir], edm_teacher)
  teacher, run = _summary(edm_teacher), _summary(workdir)
  assert (t_points[0].sampler, t_points[0].steps) == ('heun', 2)  # the teacher's own (tiny)
  assert {(p.sampler, p.steps) for p in t_points[1:]} == {('euler', 1), ('euler', 2)}
  assert [(p.method.split(' ')[0], p.steps, p.nfe) for p in students] == [('DMD2', 1, 1)]
  md = diffusion_study.table(t_points, students).splitlines()
  row = [c.strip() for c in md[-1].split('|')[1:-1]]
  fid0 = teacher['student']['quality']['2']['fid']
  fid = run['student']['quality']['1']['fid']
  assert float(row[8]) == pytest.approx(round(fid / fid0, 2), abs=0.006)
  flops0 = teacher['student']['cost']['2']['flops_per_image']
  assert float(row[6]) == pytest.approx(flops0 / run['student']['cost']['1']['flops_per_image'],
                                        abs=0.06)  # 3 teacher NFEs per image against 1
  assert diffusion_study.main([workdir, '--teacher', edm_teacher, '--out', str(tmp_path / 's'),
                               '--grid']) == 0
  assert (tmp_path / 's' / 'fid_vs_nfe.png').exists() and (tmp_path / 's' / 'study.md').exists()
  grid = np.asarray(Image.open(tmp_path / 's' / 'grid.png'))
  from kd_jax import report  # pylint: disable=import-outside-toplevel
  blank = np.zeros((16, 28, 28, 1), np.float32)
  expected = report.side_by_side([(f'{p.method} {p.sampler} {p.steps}', blank)
                                  for p in t_points + students], ncols=16)
  assert grid.shape[:2] == expected.shape[:2]  # one labelled row per model and step count
  capsys.readouterr()
  assert diffusion_study.main([str(tmp_path / 'missing'), '--teacher', edm_teacher]) == 2
  assert 'does not exist' in capsys.readouterr().err
