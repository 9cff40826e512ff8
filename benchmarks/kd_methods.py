"""Every loss-library method on one Fashion-MNIST teacher/student pair, 3 seeds: BENCHMARKS.md's table.

Each run is `launch.py --config configs/fashion_mnist/methods.py:<method> --config.seed=<s>` in
`<root>/fm_m_<method>_s<s>` (finished runs, i.e. with a summary.json, are skipped, so the script can
be stopped and resumed). The table reports the student's test top-1 at the last step and the best of
the evaluations every 250 steps, mean ± sample std over the finished seeds, and the training time
(`summary.json` `train_seconds`: the loop with compilation, evaluations and checkpoints, without
process start-up, ~15 s) of the method's fastest run — runs that shared the cores with other work
are slower, the fastest one is the closest to a run alone on the machine.

  python benchmarks/kd_methods.py                      # all methods × seeds 0,1,2, then the table
  python benchmarks/kd_methods.py --methods kd,dkd --seeds 0 --parallel 2
  python benchmarks/kd_methods.py --table-only --write  # rewrite BENCHMARKS.md from finished runs

Needs the teacher first: python launch.py --config configs/fashion_mnist/teacher.py
--workdir workdirs/fm_teacher (~50 min on 2 cores).
"""
from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import subprocess
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from configs.fashion_mnist import methods as methods_config  # pylint: disable=wrong-import-position

ALL = list(methods_config.METHODS) + ['fitnet_stages']
BEGIN, END = '<!-- kd-methods-table:begin -->', '<!-- kd-methods-table:end -->'


def workdir(root: str, method: str, seed: int) -> str:
  return os.path.join(root, f'fm_m_{method}_s{seed}')


def launch(wd: str, config_arg: str, seed: int) -> float:
  """`launch.py --config methods.py:<config_arg>` into `wd` (log beside it); seconds taken, 0 if the
  run had finished before (it has a summary.json)."""
  if os.path.exists(os.path.join(wd, 'summary.json')):
    return 0.0
  cmd = [sys.executable, os.path.join(REPO, 'launch.py'), '--config',
         f'{REPO}/configs/fashion_mnist/methods.py:{config_arg}', '--workdir', wd,
         f'--config.seed={seed}']
  t0 = time.perf_counter()
  with open(wd + '.log', 'w') as log:
    rc = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
  if rc:
    raise RuntimeError(f'{config_arg} seed {seed} failed (exit {rc}); see {wd}.log')
  return time.perf_counter() - t0


def run_one(root: str, method: str, seed: int) -> tuple[str, int, float]:
  return method, seed, launch(workdir(root, method, seed), method, seed)


def mean_std(values: list[float]) -> str:
  """Top-1 fractions as 'mean ± sample std' in percent (one value: itself; none: '–')."""
  if not values:
    return '–'
  std = np.std(values, ddof=1) if len(values) > 1 else float('nan')
  return f'{100 * np.mean(values):.2f} ± {100 * std:.2f}' if len(values) > 1 else (
      f'{100 * values[0]:.2f}')


def best_top1(summary: dict) -> float:
  """The student's best top-1 over a run's periodic evaluations (the final one if it kept none)."""
  return max(e['eval/student_top1'] for e in summary.get('eval_history') or [summary['eval']])


def table(root: str, methods: list[str], seeds: list[int]) -> str:
  rows = ['| method | seeds | last top-1 (%) | best top-1 (%) | last per seed | train s/run (fastest) |',
          '|---|---|---|---|---|---|']
  for m in methods:
    last, best, secs, done = [], [], [], []
    for s in seeds:
      path = os.path.join(workdir(root, m, s), 'summary.json')
      if not os.path.exists(path):
        continue
      summary = json.load(open(path))
      done.append(s)
      last.append(summary['eval']['eval/student_top1'])
      best.append(best_top1(summary))
      secs.append(summary['train_seconds'])
    per_seed = ', '.join(f'{100 * v:.2f}' for v in last) or '–'
    rows.append(f"| `{m}` | {','.join(map(str, done)) or '–'} | {mean_std(last)} | "
                f"{mean_std(best)} | {per_seed} | {min(secs):.0f} |" if secs else
                f'| `{m}` | – | – | – | – | – |')
  return '\n'.join(rows)


def write(md_path: str, text: str, begin: str = BEGIN, end: str = END) -> None:
  """Put `text` between the `begin`/`end` markers of `md_path` (appended with them if absent)."""
  content = open(md_path).read()
  block = f'{begin}\n{text}\n{end}'
  if begin in content:
    head, rest = content.split(begin, 1)
    content = head + block + rest.split(end, 1)[1]
  else:
    content = content.rstrip('\n') + '\n\n' + block + '\n'
  open(md_path, 'w').write(content)


def parse_args(doc: str, known: list[str], add_more) -> tuple[argparse.Namespace, list[str]]:
  """The flags both methods benchmarks share (`add_more(parser)` adds the script's own); the
  arguments and the chosen methods, unknown ones refused with the list of known ones."""
  p = argparse.ArgumentParser(description=doc.split('\n')[0])
  p.add_argument('--methods', default=','.join(known))
  p.add_argument('--root', default=os.path.join(REPO, 'workdirs'))
  p.add_argument('--parallel', type=int, default=1,
                 help='runs at once (on 2 cores 1 is faster in total: two at once ran at ~0.5× '
                      'and ~0.35× of their speed alone)')
  p.add_argument('--table-only', action='store_true')
  p.add_argument('--write', action='store_true', help="rewrite BENCHMARKS.md's table(s)")
  add_more(p)
  args = p.parse_args()
  methods = [m for m in args.methods.split(',') if m]
  unknown = sorted(set(methods) - set(known))
  if unknown:
    p.error(f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(known)}")
  return args, methods


def main() -> int:
  args, methods = parse_args(__doc__, ALL, lambda p: p.add_argument('--seeds', default='0,1,2'))
  seeds = [int(s) for s in args.seeds.split(',')]
  if not args.table_only:
    jobs = [(m, s) for s in seeds for m in methods]  # all methods of seed 0 first
    with concurrent.futures.ThreadPoolExecutor(args.parallel) as pool:
      for m, s, secs in pool.map(lambda job: run_one(args.root, *job), jobs):
        print(f'{m} seed {s}: ' + (f'{secs:.0f} s' if secs else 'already done'), flush=True)
  text = table(args.root, methods, seeds)
  print(text)
  if args.write:
    write(os.path.join(REPO, 'BENCHMARKS.md'), text)
  return 0


if __name__ == '__main__':
  sys.exit(main())
