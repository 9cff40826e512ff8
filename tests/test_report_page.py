"""`python -m kd_jax.report`: one HTML page over finished runs with their curves, the
size–quality–speed table and Pareto plots, numbers taken from the runs' summaries."""
import base64
import json
import os
import re

from conftest import tiny_config
from kd_jax.report import __main__ as cli
from kd_jax.report import page
from kd_jax.trainers import classification


def test_page_over_a_teacher_and_its_student(teacher_workdir, tiny_data_dir, tmp_path):
  student = str(tmp_path / 'kd')
  classification.train_and_evaluate(
      tiny_config('fashion_mnist/kd_student.py', tiny_data_dir,
                  **{'teacher.checkpoint': teacher_workdir}), student)
  out = str(tmp_path / 'out' / 'report.html')
  assert cli.main([teacher_workdir, student, '--out', out, '--title', 'tiny']) == 0
  html = open(out).read()
  with open(os.path.join(student, 'summary.json')) as f:
    s = json.load(f)
  pts = {p.label: p for p in page.points('kd', s)}
  assert pts['kd'].metric == s['eval']['eval/student_top1'] and pts['kd'].role == 'distilled'
  assert pts['teacher of kd'].params == s['teacher']['params']
  # Both runs have a section with their loss curves; the cross-run table and Pareto plots exist.
  assert '<h2 id="run">' in html and '<h2 id="kd">' in html
  assert 'alt="curves of kd"' in html and 'alt="pareto params"' in html
  assert f"<td>{s['student']['params']:,}</td>" in html
  for data in re.findall(r'base64,([A-Za-z0-9+/=]+)"', html):
    assert base64.b64decode(data)[:8] == b'\x89PNG\r\n\x1a\n'


def test_a_run_without_summary_is_one_clear_error(tmp_path, capsys):
  (tmp_path / 'half').mkdir()
  assert cli.main([str(tmp_path / 'half'), '--out', str(tmp_path / 'r.html')]) == 2
  assert 'has no summary.json' in capsys.readouterr().err
  assert not (tmp_path / 'r.html').exists()
