"""`make demo` (tiny): starts from the shipped teachers and compares distilled with scratch students."""
import json
import os

import numpy as np

from conftest import flat_tree
from kd_jax import checkpoint as ckpt_lib
from kd_jax import demo, pretrained


def test_demo_distils_from_the_shipped_teachers_and_compares_with_scratch(tiny_data_dir,
                                                                          tmp_path, capsys):
  workdir = str(tmp_path / 'demo')
  summaries = demo.run_stages(workdir, 'tiny', data_dir=tiny_data_dir, diffusion=True)
  # No teacher was trained: the stages used the shipped ones.
  assert not os.path.exists(os.path.join(workdir, 'classifier_teacher'))
  assert not os.path.exists(os.path.join(workdir, 'gan_teacher'))
  shipped_g = pretrained.manifest()['fashion_mnist/dcgan']
  d = summaries['distilled_generator']
  assert d['teacher']['checkpoint'] == 'pretrained:fashion_mnist/dcgan'
  assert d['teacher']['params'] == shipped_g['metrics']['generator']['params']
  # Each scratch baseline ran exactly as many steps as the student it is compared with.
  assert summaries['scratch_student']['step'] == summaries['kd_student']['step']
  assert summaries['scratch_generator']['step'] == d['step']
  # The diffusion stage distils the shipped EDM teacher and scores it at the student's step counts.
  cd = summaries['distilled_diffusion']
  assert cd['teacher']['checkpoint'] == 'pretrained:fashion_mnist/edm'
  assert 'euler_1' in cd['teacher']['quality']
  assert '1' in cd['student']['quality'] and cd['student']['cost']['1']['nfe'] == 1
  # Plain (L2) consistency distillation starts from the teacher's weights and moves away from them.
  student = flat_tree(ckpt_lib.load_export_numpy(os.path.join(workdir, 'distilled_diffusion')))
  teacher = flat_tree(ckpt_lib.load_export_numpy(pretrained.path_of('fashion_mnist/edm')))
  assert student.keys() == teacher.keys()
  assert any(not np.array_equal(student[k], teacher[k]) for k in student)
  demo.print_results(workdir, summaries)
  out = capsys.readouterr().out
  assert '| distilled generator |' in out and '| scratch generator' in out
  assert '| consistency-distilled, 1 step |' in out and '| diffusion teacher, Euler 1 step |' in out
  with open(os.path.join(workdir, 'results.json')) as f:
    rows = {r['model']: r for r in json.load(f)}
  assert rows['KD student (small CNN)']['agreement'] is not None
  assert os.listdir(os.path.join(workdir, 'distilled_generator', 'images'))
