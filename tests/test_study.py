"""`python -m kd_jax.study`: mean ± std (ddof=1) over seeds and paired differences between groups."""
import json

import pytest

from kd_jax import study


def _run(root, name, top1):
  run = root / name
  run.mkdir()
  (run / 'summary.json').write_text(json.dumps({'test': {'test/student_top1': top1}}))


def test_groups_are_aggregated_and_paired_by_seed(tmp_path, capsys):
  for s, (a, b) in enumerate([(0.80, 0.83), (0.82, 0.84), (0.81, 0.80)]):
    _run(tmp_path, f'scratch_s{s}', a)
    _run(tmp_path, f'kd_s{s}', b)
  assert study.main([str(tmp_path / 'scratch_s*'), str(tmp_path / 'kd_s*'),
                     '--key', 'test.test/student_top1']) == 0
  out = capsys.readouterr().out
  assert '0.8100 ± 0.0100 over 3 runs' in out  # scratch: mean 0.81, sample std 0.01
  # kd - scratch per seed: +0.03, +0.02, -0.01 → mean +0.0133, ahead on 2 of 3.
  assert 'paired difference +0.0133 ± 0.0208 (+0.0300, +0.0200, -0.0100; ahead on 2 of 3)' in out


def test_unequal_groups_are_not_paired(tmp_path, capsys):
  _run(tmp_path, 'a_s0', 0.5)
  _run(tmp_path, 'a_s1', 0.6)
  _run(tmp_path, 'b_s0', 0.7)
  study.main([str(tmp_path / 'a_s*'), str(tmp_path / 'b_s*'), '--key', 'test.test/student_top1'])
  assert 'not paired (1 vs 2 runs)' in capsys.readouterr().out
  with pytest.raises(ValueError, match='as many runs'):
    study.paired([0.1, 0.2], [0.3])
