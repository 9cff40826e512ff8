"""Every loss-library method at a weight tuned on the validation split, 3 seeds (issue 14 item 3).

Protocol (`configs/fashion_mnist/methods.py:<method>,val[,<knobs>]`): the student trains 1,000 steps
on `train[:90%]` with the teacher `teacher.py:val` (trained on `train[:90%]` only), is evaluated
every 250 steps on the held-out `train[90%:]`, and `test` is scored once, at the end.

  1. sweep  seed 0 of every point of `methods.SWEEP[method]`; the chosen point is the one with the
            best final validation top-1 (a tie keeps the reference point, `methods.REFERENCE`).
  2. seeds  the chosen point and the reference point, seeds 0, 1, 2 (seed 0 is the sweep's run).
  3. table  BENCHMARKS.md: the sweep (validation, seed 0) and reference vs tuned on test (3 seeds,
            mean ± std, per seed, the paired difference to scratch).

Runs live in `<root>/tuned/<method>_<point>_s<seed>`; finished runs (with a summary.json) are
skipped, so the script can be stopped and resumed.

  python benchmarks/kd_methods_tuned.py --write                 # everything (~7 h alone on 2 cores)
  python benchmarks/kd_methods_tuned.py --stage sweep --methods kd,pkt
  python benchmarks/kd_methods_tuned.py --table-only --write    # tables from finished runs

Needs the teacher first: python launch.py --config configs/fashion_mnist/teacher.py:val
--workdir workdirs/fm_teacher_val (~40 min on 2 cores).
"""
from __future__ import annotations

import concurrent.futures
import json
import os
import sys

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from configs.fashion_mnist import methods as methods_config  # pylint: disable=wrong-import-position
import kd_methods  # pylint: disable=wrong-import-position

ALL = list(methods_config.SWEEP)
SWEEP_MARKS = ('<!-- kd-tuned-sweep:begin -->', '<!-- kd-tuned-sweep:end -->')
TABLE_MARKS = ('<!-- kd-tuned-table:begin -->', '<!-- kd-tuned-table:end -->')
SEEDS = (0, 1, 2)


def workdir(root: str, method: str, point: str, seed: int) -> str:
  slug = point.replace(',', '_').replace('=', '') or 'ref'  # 'alpha=0.9,T=4' → 'alpha0.9_T4'
  return os.path.join(root, 'tuned', f'{method}_{slug}_s{seed}')


def config_arg(method: str, point: str) -> str:
  return ','.join(p for p in (method, 'val', point) if p)


def summary(root: str, method: str, point: str, seed: int) -> dict | None:
  path = os.path.join(workdir(root, method, point, seed), 'summary.json')
  return json.load(open(path)) if os.path.exists(path) else None


def scores(s: dict) -> dict:
  """Final and best validation top-1, the test top-1 (scored once, at the end), seconds."""
  return {'val': s['eval']['eval/student_top1'], 'val_best': kd_methods.best_top1(s),
          'test': s['test']['test/student_top1'], 'secs': s['train_seconds']}


def chosen(root: str, method: str) -> str | None:
  """The sweep's pick: best final validation top-1 of seed 0; None until every point has run."""
  grid = methods_config.SWEEP[method]
  runs = [summary(root, method, p, 0) for p in grid]
  if any(r is None for r in runs):
    return None
  vals = [scores(r)['val'] for r in runs]
  best = max(vals)
  ref = methods_config.REFERENCE[method]
  return ref if vals[grid.index(ref)] == best else grid[vals.index(best)]


def jobs(root: str, methods: list[str], stage: str) -> list[tuple[str, str, int]]:
  """The (method, point, seed) runs of one stage: 'sweep' (seed 0 of the grid) or 'seeds' (seeds
  1, 2 of the reference point and, once the sweep is complete, of the pick)."""
  if stage == 'sweep':
    return [(m, p, 0) for m in methods for p in methods_config.SWEEP[m]]
  out = []
  for m in methods:
    pick = chosen(root, m)
    if pick is None:
      print(f'{m}: sweep unfinished, its seeds wait', flush=True)
    points = dict.fromkeys([methods_config.REFERENCE[m]] + ([pick] if pick is not None else []))
    out += [(m, p, s) for s in SEEDS[1:] for p in points]
  return out


def run(root: str, job: tuple[str, str, int]) -> tuple[tuple[str, str, int], float]:
  method, point, seed = job
  wd = workdir(root, method, point, seed)
  os.makedirs(os.path.dirname(wd), exist_ok=True)
  return job, kd_methods.launch(wd, config_arg(method, point), seed)


def _per_seed(root: str, method: str, point: str | None) -> dict[int, dict]:
  """seed → `scores` of the finished runs of one point (none while the point is unknown)."""
  runs = {i: summary(root, method, point, i) for i in SEEDS} if point is not None else {}
  return {i: scores(s) for i, s in runs.items() if s is not None}


def _cell(runs: list[dict], key: str) -> str:
  """mean ± std over the finished seeds, with their count while fewer than all have run."""
  if not runs:
    return '–'
  text = kd_methods.mean_std([r[key] for r in runs])
  return text if len(runs) == len(SEEDS) else f'{text} (n={len(runs)})'


def sweep_table(root: str, methods: list[str]) -> str:
  rows = ['| method | point: final validation top-1 % (best of 4), seed 0 — **chosen** |',
          '|---|---|']
  for m in methods:
    pick, cells = chosen(root, m), []
    for p in methods_config.SWEEP[m]:
      s = summary(root, m, p, 0)
      text = f"{p or 'reference'}: " + (
          f"{100 * scores(s)['val']:.2f} ({100 * scores(s)['val_best']:.2f})" if s else '–')
      cells.append(f'**{text}**' if p == pick and len(methods_config.SWEEP[m]) > 1 else text)
    rows.append(f"| `{m}` | {'; '.join(cells)} |")
  return '\n'.join(rows)


def result_table(root: str, methods: list[str]) -> str:
  rows = ['| method | reference point | test top-1 % (ref) | chosen point | test top-1 % (tuned) | '
          'tuned per seed | tuned val final / best % | tuned − scratch, paired (ahead) | s/run |',
          '|---|---|---|---|---|---|---|---|---|']
  scratch = _per_seed(root, 'scratch', '')
  for m in methods:
    ref_point, pick = methods_config.REFERENCE[m], chosen(root, m)
    ref, tuned_by_seed = _per_seed(root, m, ref_point), _per_seed(root, m, pick)
    tuned = list(tuned_by_seed.values())
    paired = [r['test'] - scratch[i]['test'] for i, r in tuned_by_seed.items() if i in scratch]
    diff = (f"{kd_methods.mean_std(paired)} ({sum(d > 0 for d in paired)}/{len(paired)})"
            if paired and m != 'scratch' else '–')
    timed = list(ref.values()) + tuned
    secs = f"{min(r['secs'] for r in timed):.0f}" if timed else '–'
    per_seed = ', '.join(f"{100 * r['test']:.2f}" for r in tuned) or '–'
    rows.append(
        f"| `{m}` | {ref_point or '–'} | {_cell(list(ref.values()), 'test')} | "
        f"{'–' if pick is None else pick or '–'} | {_cell(tuned, 'test')} | {per_seed} | "
        f"{_cell(tuned, 'val')} / {_cell(tuned, 'val_best')} | {diff} | "
        f"{secs} |")
  return '\n'.join(rows)


def main() -> int:
  args, methods = kd_methods.parse_args(__doc__, ALL, lambda p: p.add_argument(
      '--stage', choices=('sweep', 'seeds', 'all'), default='all'))
  if not args.table_only:
    stages = ('sweep', 'seeds') if args.stage == 'all' else (args.stage,)
    for stage in stages:  # the seeds need the sweep's pick: one stage after the other
      with concurrent.futures.ThreadPoolExecutor(args.parallel) as pool:
        for (m, point, s), secs in pool.map(lambda j: run(args.root, j),
                                            jobs(args.root, methods, stage)):
          done = f'{secs:.0f} s' if secs else 'already done'
          print(f'{config_arg(m, point)} seed {s}: {done}', flush=True)
  sweep, result = sweep_table(args.root, methods), result_table(args.root, methods)
  print(sweep, result, sep='\n\n')
  if args.write:
    md = os.path.join(REPO, 'BENCHMARKS.md')
    kd_methods.write(md, sweep, *SWEEP_MARKS)
    kd_methods.write(md, result, *TABLE_MARKS)
  return 0


if __name__ == '__main__':
  sys.exit(main())
