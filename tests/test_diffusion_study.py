"""kd_jax.report.diffusion_study on hand-written summaries: which teacher a baseline belongs to."""
import json
import os

from kd_jax.report import diffusion_study


def _write(d, summary):
  os.makedirs(d, exist_ok=True)
  with open(os.path.join(d, 'summary.json'), 'w') as f:
    json.dump(summary, f)


def _q(fid):
  return {'fid': fid, 'kid': 0.1, 'precision': 0.8, 'recall': 0.7}


def _cost(sampler, steps, params, per_nfe):
  return {'sampler': sampler, 'steps': steps, 'nfe': steps, 'params': params,
          'flops_per_image': per_nfe * steps, 'images_per_sec': 10.0}


def test_a_chain_from_another_teacher_gets_that_teachers_baselines(tmp_path):
  big = str(tmp_path / 'big')  # the study's teacher: Heun 18 = 35 NFE, 100 params
  _write(big, {'student': {'quality': {'18': _q(1.0)},
                           'cost': {'18': {**_cost('heun', 18, 100, 10.0), 'nfe': 35,
                                           'flops_per_image': 350.0}}}})
  small = str(tmp_path / 'small')  # a compressed teacher (10 params) the chain starts from
  chain = str(tmp_path / 'chain')
  r8, r4 = os.path.join(chain, 'steps_8'), os.path.join(chain, 'steps_4')
  _write(chain, {'trainer': 'progressive_distill', 'rounds': [8, 4],
                 'round_workdirs': {'8': r8, '4': r4}})
  _write(r8, {'student': {'quality': {'8': _q(3.0)}, 'cost': {'8': _cost('euler', 8, 10, 1.0)}},
              'teacher': {'checkpoint': small, 'quality': {'euler_8': _q(5.0)},
                          'reference': {'params': 10, 'flops_per_nfe': 1.0}}})
  _write(r4, {'student': {'quality': {'4': _q(4.0)}, 'cost': {'4': _cost('euler', 4, 10, 1.0)}},
              'teacher': {'checkpoint': r8, 'quality': {}}})
  t_points, students = diffusion_study.collect([chain], big)
  # The compressed teacher's Euler-8 score is not the study teacher's: it stays out of the teacher
  # rows and is listed, at its own size and cost, as the chain's own teacher.
  assert [(p.sampler, p.steps) for p in t_points] == [('heun', 18)]
  own = [p for p in students if p.method.startswith('its teacher small')]
  assert len(own) == 1 and own[0].quality['fid'] == 5.0
  assert own[0].params == 10 and own[0].flops_per_image == 8.0
  assert sorted(p.quality['fid'] for p in students if p.method.startswith('progressive')) == [
      3.0, 4.0]
  md = diffusion_study.table(t_points, students)
  assert '| its teacher small (of progressive (chain)) | euler | 8 | 8 | 10 |' in md
