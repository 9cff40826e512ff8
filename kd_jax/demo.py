"""The embedded Fashion-MNIST demo (`make demo`): teacher → distilled student, end to end.

Stages (each a normal config run in its own sub-workdir; a finished stage is not re-run):
  1. classifier teacher (ResNet-20) — also the feature extractor for FID/KID/precision/recall;
  2. KD student (small CNN) distilled from it;
  3. GAN teacher generator;
  4. small student generator distilled from the GAN teacher's G_ema on the same latents;
then prints a results table and where the image grids, TensorBoard events and summaries are.

  python -m kd_jax.demo --workdir workdirs/demo
"""
from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

from absl import app, flags, logging

_WORKDIR = flags.DEFINE_string('workdir', 'workdirs/demo', 'Where every stage writes its results.')
_ARG = flags.DEFINE_string('arg', 'demo', "Config argument for every stage ('demo' or 'tiny').")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# (stage, config file, {config field: value or '{stage}' = that stage's workdir})
STAGES: list[tuple[str, str, dict[str, Any]]] = [
    ('classifier_teacher', 'configs/fashion_mnist/teacher.py', {}),
    ('kd_student', 'configs/fashion_mnist/kd_student.py',
     {'teacher.checkpoint': '{classifier_teacher}'}),
    ('gan_teacher', 'configs/fashion_mnist/gan_teacher.py',
     {'eval.classifier_checkpoint': '{classifier_teacher}'}),
    ('distilled_generator', 'configs/fashion_mnist/distill_l1_lpips.py',
     {'teacher.checkpoint': '{gan_teacher}', 'eval.classifier_checkpoint': '{classifier_teacher}',
      'frozen_net.checkpoint': '{classifier_teacher}'}),
]


def run_stages(workdir: str, arg: str) -> dict[str, dict[str, Any]]:
  from kd_jax import config_utils, trainers  # pylint: disable=import-outside-toplevel
  dirs = {name: os.path.join(workdir, name) for name, _, _ in STAGES}
  summaries = {}
  for name, path, fields in STAGES:
    summary_path = os.path.join(dirs[name], 'summary.json')
    if os.path.exists(summary_path):
      print(f'[demo] {name}: already done ({summary_path})', flush=True)
    else:
      config = config_utils.load_config_file(path, arg)
      for field, value in fields.items():
        config_utils.set_dotted(config, field, value.format(**dirs))
      print(f'[demo] {name}: python launch.py --config {path}:{arg} --workdir {dirs[name]} '
            + ' '.join(f'--config.{k}={v.format(**dirs)}' for k, v in fields.items()), flush=True)
      t0 = time.time()
      trainers.get(config.trainer)(config, dirs[name])
      print(f'[demo] {name}: {time.time() - t0:.0f}s', flush=True)
    with open(summary_path) as f:
      summaries[name] = json.load(f)
  return summaries


def _fmt(x: Any) -> str:
  return f'{x:.4g}' if isinstance(x, float) else str(x)


def print_results(workdir: str, s: dict[str, dict[str, Any]]) -> None:
  t, k = s['classifier_teacher'], s['kd_student']
  print('\n=== kd_jax Fashion-MNIST demo ===')
  print(f"classifier teacher top-1 {_fmt(t['eval']['eval/student_top1'])} "
        f"({t['student']['params']} params)")
  print(f"KD student top-1 {_fmt(k['eval']['eval/student_top1'])}, agreement with teacher "
        f"{_fmt(k['eval']['eval/agreement'])} ({k['student']['params']} params)")
  g, d = s['gan_teacher'], s['distilled_generator']
  q_t, q_s = d.get('quality_teacher', {}), d.get('quality_student', {})
  pairs = d['student_vs_teacher_same_latents']
  print(f"generator teacher: {d['teacher']['params']} params, {_fmt(d['teacher']['flops_per_example'])}"
        f" FLOPs/image; student: {d['student']['params']} params "
        f"({_fmt(d['params_ratio'])}×), {_fmt(d['student']['flops_per_example'])} FLOPs/image "
        f"({_fmt(d['flops_ratio'])}×)")
  if q_t:
    print(f"FID teacher {_fmt(q_t['fid'])}, student {_fmt(q_s['fid'])} "
          f"({q_s['num_samples']} samples; features: {q_s['feature_extractor']})")
  print(f"student vs teacher on the same latents: PSNR {_fmt(pairs['vs_teacher_psnr'])} dB, "
        f"SSIM {_fmt(pairs['vs_teacher_ssim'])} ({pairs['num_pairs']} pairs)")
  print(f"\nimage grids: {os.path.join(workdir, 'distilled_generator', 'images')} "
        f"(teacher row above student row, same latents); GAN samples: "
        f"{os.path.join(workdir, 'gan_teacher', 'images')}")
  print(f'summaries: {workdir}/*/summary.json; TensorBoard: tensorboard --logdir {workdir}')
  del g


def main(argv):
  del argv
  if not flags.FLAGS['verbosity'].present:
    # Orbax/clu INFO lines drown the progress lines; --verbosity=0 brings them back.
    logging.set_verbosity(logging.WARNING)
  from kd_jax import errors  # pylint: disable=import-outside-toplevel
  t0 = time.time()
  try:
    summaries = run_stages(_WORKDIR.value, _ARG.value)
  except errors.KDError as e:
    print(f'kd_jax: error: {e}', file=sys.stderr)
    sys.exit(2)
  print_results(_WORKDIR.value, summaries)
  print(f'[demo] total {time.time() - t0:.0f}s')


if __name__ == '__main__':
  app.run(main)
