"""The embedded Fashion-MNIST demo (`make demo`): shipped teachers → distilled students, end to end.

The teachers come with kd_jax (`kd_jax/pretrained/`, `pretrained:fashion_mnist/...`: the commands in
its manifest trained them), so the demo's minutes go to distillation and to the comparison every
distilled student needs, the same student trained from scratch for the same steps:
  1. KD student (small CNN) from the shipped ResNet-20 classifier, and the same CNN from labels;
  2. small generator distilled from the shipped DCGAN teacher's G_ema on the same latents, and the
     same generator trained as a GAN from data;
  3. one-step consistency distillation of the shipped EDM diffusion teacher (Heun, 35 network
     evaluations per image), compared with the teacher itself sampled in one step
     (`--nodiffusion` / `make demo DIFFUSION=0` skips it).
The classifier is also the feature extractor of FID/KID/precision/recall and the LPIPS network.
`--retrain_teachers` trains the teachers first instead (their `:demo` configs, ~15 min more).
Then it prints a results table and where the image grids, TensorBoard events and summaries are.

  python -m kd_jax.demo --workdir workdirs/demo [--retrain_teachers]
"""
from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

from absl import app, flags

_WORKDIR = flags.DEFINE_string('workdir', 'workdirs/demo', 'Where every stage writes its results.')
_ARG = flags.DEFINE_string('arg', 'demo', "Config argument for every stage ('demo' or 'tiny').")
_DATA_DIR = flags.DEFINE_string('data_dir', None, "TFDS data dir for every stage (default: kd_jax's).")
_DIFFUSION = flags.DEFINE_bool('diffusion', True,
                               'Run the diffusion stage (one-step consistency distillation of the '
                               'shipped EDM teacher); --nodiffusion skips it.')
_RETRAIN = flags.DEFINE_bool('retrain_teachers', False,
                             'Train the teachers (their :demo configs) instead of using the shipped '
                             'ones.')

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Teacher stages: (stage, config file, fields, the shipped teacher that replaces the run).
TEACHERS: list[tuple[str, str, dict[str, Any], str]] = [
    ('classifier_teacher', 'configs/fashion_mnist/teacher.py', {}, 'fashion_mnist/classifier'),
    ('gan_teacher', 'configs/fashion_mnist/gan_teacher.py',
     {'eval.classifier_checkpoint': '{classifier_teacher}'}, 'fashion_mnist/dcgan'),
    ('diffusion_teacher', 'configs/fashion_mnist/edm_teacher.py',
     {'eval.classifier_checkpoint': '{classifier_teacher}'}, 'fashion_mnist/edm'),
]
# (stage, config file, {config field: value, '{stage}' = that stage's run or shipped teacher}).
# A `scratch_*` stage runs as many steps as the distilled stage it is compared with.
STAGES: list[tuple[str, str, dict[str, Any]]] = [
    ('kd_student', 'configs/fashion_mnist/kd_student.py',
     {'teacher.checkpoint': '{classifier_teacher}', 'teacher.model': {}}),
    ('scratch_student', 'configs/fashion_mnist/scratch_student.py', {}),
    ('distilled_generator', 'configs/fashion_mnist/distill_l1_lpips.py',
     {'teacher.checkpoint': '{gan_teacher}', 'teacher.model': {},
      'eval.classifier_checkpoint': '{classifier_teacher}',
      'frozen_net.checkpoint': '{classifier_teacher}'}),
    ('scratch_generator', 'configs/fashion_mnist/gan_scratch_student.py',
     {'eval.classifier_checkpoint': '{classifier_teacher}'}),
    ('distilled_diffusion', 'configs/fashion_mnist/edm_consistency.py',
     {'teacher.checkpoint': '{diffusion_teacher}', 'teacher.model': {},
      'eval.classifier_checkpoint': '{classifier_teacher}'}),
]
COMPARED = {'scratch_student': 'kd_student', 'scratch_generator': 'distilled_generator'}


def _run(name: str, path: str, fields: dict[str, Any], arg: str, dirs: dict[str, str],
         steps: dict[str, int], data_dir: str | None) -> dict[str, Any]:
  from kd_jax import config_utils, trainers  # pylint: disable=import-outside-toplevel
  fill = lambda v: v.format(**dirs) if isinstance(v, str) else v
  summary_path = os.path.join(dirs[name], 'summary.json')
  if os.path.exists(summary_path):
    print(f'[demo] {name}: already done ({summary_path})', flush=True)
  else:
    config = config_utils.load_config_file(path, arg)
    for field, value in fields.items():
      config_utils.set_dotted(config, field, fill(value))
    flags_shown = [f'--config.{k}={fill(v)}' for k, v in fields.items() if v != {}]
    if data_dir:
      config.data.data_dir = data_dir
      flags_shown.append(f'--config.data.data_dir={data_dir}')
    if name in COMPARED:
      config.total_steps = steps[COMPARED[name]]
      flags_shown.append(f'--config.total_steps={config.total_steps}')
    print(f'[demo] {name}: python launch.py --config {path}:{arg} --workdir {dirs[name]} '
          + ' '.join(flags_shown), flush=True)
    t0 = time.time()
    trainers.get(config.trainer)(config, dirs[name])
    print(f'[demo] {name}: {time.time() - t0:.0f}s', flush=True)
  with open(summary_path) as f:
    summary = json.load(f)
  steps[name] = summary['step']
  return summary


DIFFUSION_STAGES = ('diffusion_teacher', 'distilled_diffusion')


def run_stages(workdir: str, arg: str, retrain_teachers: bool = False,
               data_dir: str | None = None, diffusion: bool = True
               ) -> dict[str, dict[str, Any]]:
  from kd_jax import pretrained  # pylint: disable=import-outside-toplevel
  keep = lambda name: diffusion or name not in DIFFUSION_STAGES
  dirs = {name: os.path.join(workdir, name) for name, _, _ in STAGES}
  summaries: dict[str, dict[str, Any]] = {}
  steps: dict[str, int] = {}
  for name, path, fields, shipped in TEACHERS:
    if not keep(name):
      continue
    if retrain_teachers:
      dirs[name] = os.path.join(workdir, name)
      summaries[name] = _run(name, path, fields, arg, dirs, steps, data_dir)
    else:
      pretrained.verify(shipped)
      dirs[name] = pretrained.PREFIX + shipped
      entry = pretrained.manifest()[shipped]
      summaries[name] = entry['metrics']
      print(f"[demo] {name}: shipped {dirs[name]} ({entry['steps']} steps; "
            f"{entry['command']})", flush=True)
  for name, path, fields in STAGES:
    if keep(name):
      summaries[name] = _run(name, path, fields, arg, dirs, steps, data_dir)
  return summaries


def _fmt(x: Any) -> str:
  return f'{x:.4g}' if isinstance(x, float) else str(x)


def _get(summary: dict[str, Any], *path: str) -> Any:
  for key in path:
    if not isinstance(summary, dict) or key not in summary:
      return None
    summary = summary[key]
  return summary


def results(s: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
  """One row per model: params, top-1/agreement or FID/KID/PSNR (None where not measured)."""
  t, k, c = s['classifier_teacher'], s['kd_student'], s['scratch_student']
  d, g, sg = s['distilled_generator'], s['gan_teacher'], s['scratch_generator']
  pairs = d['student_vs_teacher_same_latents']
  rows = [
      {'model': 'classifier teacher (ResNet-20)', 'steps': t['step'],
       'params': t['student']['params'], 'top1': _get(t, 'eval', 'eval/student_top1')},
      {'model': 'KD student (small CNN)', 'steps': k['step'], 'params': k['student']['params'],
       'top1': _get(k, 'eval', 'eval/student_top1'),
       'agreement': _get(k, 'eval', 'eval/agreement')},
      {'model': 'scratch student (same CNN, labels only)', 'steps': c['step'],
       'params': c['student']['params'], 'top1': _get(c, 'eval', 'eval/student_top1')},
      {'model': 'generator teacher (DCGAN)', 'steps': g['step'], 'params': d['teacher']['params'],
       'fid': _get(d, 'quality_teacher', 'fid'), 'kid': _get(d, 'quality_teacher', 'kid')},
      {'model': 'distilled generator', 'steps': d['step'], 'params': d['student']['params'],
       'fid': _get(d, 'quality_student', 'fid'), 'kid': _get(d, 'quality_student', 'kid'),
       'psnr_vs_teacher': pairs['vs_teacher_psnr']},
      {'model': 'scratch generator (same G, GAN from data)', 'steps': sg['step'],
       'params': sg['generator']['params'], 'fid': _get(sg, 'quality', 'fid'),
       'kid': _get(sg, 'quality', 'kid')},
  ]
  cd = s.get('distilled_diffusion')
  if cd:
    ref = _get(cd, 'teacher', 'reference') or {}
    rows.append({'model': f"diffusion teacher (EDM U-Net, {ref.get('sampler')} "
                          f"{ref.get('steps')} = {ref.get('nfe')} NFE)",
                 'steps': _get(s, 'diffusion_teacher', 'step'), 'params': ref.get('params'),
                 'fid': _get(s, 'diffusion_teacher', 'student', 'quality', str(ref.get('steps')),
                             'fid'),
                 'kid': _get(s, 'diffusion_teacher', 'student', 'quality', str(ref.get('steps')),
                             'kid')})
    for key, q in sorted((_get(cd, 'teacher', 'quality') or {}).items()):
      sampler, _, n = key.partition('_')
      rows.append({'model': f'diffusion teacher, {sampler.capitalize()} {n} '
                            f'step{"s" if int(n) > 1 else ""}',
                   'params': ref.get('params'), 'fid': q.get('fid'), 'kid': q.get('kid')})
    for n, q in sorted((_get(cd, 'student', 'quality') or {}).items()):
      rows.append({'model': f'consistency-distilled, {n} step{"s" if int(n) > 1 else ""}',
                   'steps': cd['step'], 'params': ref.get('params'), 'fid': q.get('fid'),
                   'kid': q.get('kid'),
                   'psnr_vs_teacher': _get(cd, 'student', 'vs_teacher', n, 'psnr')})
  return rows


def print_results(workdir: str, s: dict[str, dict[str, Any]]) -> None:
  rows = results(s)
  cols = ['steps', 'params', 'top1', 'agreement', 'fid', 'kid', 'psnr_vs_teacher']
  print('\n=== kd_jax Fashion-MNIST demo ===')
  print(f"| model | {' | '.join(cols)} |")
  print('|---' * (len(cols) + 1) + '|')
  for r in rows:
    print(f"| {r['model']} | " + ' | '.join(_fmt(r.get(c)) if r.get(c) is not None else '—'
                                             for c in cols) + ' |')
  d = s['distilled_generator']
  print(f"generator student/teacher: {_fmt(d['params_ratio'])}× params, "
        f"{_fmt(d['flops_ratio'])}× FLOPs/image; FID/KID features: "
        f"{_get(d, 'quality_student', 'feature_extractor')}")
  with open(os.path.join(workdir, 'results.json'), 'w') as f:
    json.dump(rows, f, indent=1)
  print(f"\nimage grids: {os.path.join(workdir, 'distilled_generator', 'images')} "
        '(teacher row above student row, same latents); scratch generator samples: '
        f"{os.path.join(workdir, 'scratch_generator', 'images')}")
  print(f'results: {workdir}/results.json; summaries: {workdir}/*/summary.json; '
        f'TensorBoard: tensorboard --logdir {workdir}')


def main(argv):
  del argv
  # Orbax/clu INFO lines and known harmless warnings drown the progress lines; --verbosity=0
  # brings them back (kd_jax.quiet).
  from kd_jax import quiet  # pylint: disable=import-outside-toplevel
  quiet.install(verbose=flags.FLAGS['verbosity'].present)
  from kd_jax import errors  # pylint: disable=import-outside-toplevel
  t0 = time.time()
  try:
    summaries = run_stages(_WORKDIR.value, _ARG.value, _RETRAIN.value, _DATA_DIR.value,
                           _DIFFUSION.value)
  except errors.KDError as e:
    print(f'kd_jax: error: {e}', file=sys.stderr)
    sys.exit(2)
  print_results(_WORKDIR.value, summaries)
  from kd_jax.report import page  # pylint: disable=import-outside-toplevel
  runs = [os.path.join(_WORKDIR.value, name) for name, _, _ in STAGES]
  report = page.write([r for r in runs if os.path.exists(os.path.join(r, 'summary.json'))],
                      os.path.join(_WORKDIR.value, 'report.html'), 'kd_jax Fashion-MNIST demo')
  print(f'report: {report} (one HTML page: curves, grids, size–quality–speed, Pareto)')
  print(f'[demo] total {time.time() - t0:.0f}s')


if __name__ == '__main__':
  app.run(main)
