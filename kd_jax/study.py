"""Aggregate a study: mean ± std of one summary.json entry over the runs (seeds) matching globs.

  python -m kd_jax.study 'workdirs/fm_scratch_s*' 'workdirs/fm_kd_s*' --key eval.eval/student_top1

With two or more patterns that match the same number of runs, each later group is also compared
with the first run by run (runs paired in sorted order, so name them by seed: `_s0`, `_s1`, ...):
the paired differences, their mean ± std and on how many pairs the later group is ahead.
"""
from __future__ import annotations

import glob
import json
import os
import sys
from typing import Any, Sequence

import numpy as np


def lookup(summary: dict[str, Any], dotted: str) -> Any:
  """`a.b` → summary['a']['b'] (keys may themselves contain '/')."""
  node: Any = summary
  for part in dotted.split('.'):
    node = node[part]
  return node


def aggregate(workdirs: Sequence[str], key: str) -> tuple[float, float, list[float]]:
  values = []
  for w in workdirs:
    with open(os.path.join(w, 'summary.json')) as f:
      values.append(float(lookup(json.load(f), key)))
  # Sample std (ddof=1) across seeds, as papers report it.
  std = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
  return float(np.mean(values)), std, values


def paired(base: Sequence[float], other: Sequence[float]) -> tuple[float, float, list[float]]:
  """Per-pair differences `other - base` (same seeds, same order), their mean and sample std."""
  if len(base) != len(other):
    raise ValueError(f'paired differences need as many runs in each group ({len(base)} vs '
                     f'{len(other)})')
  diffs = [float(o - b) for b, o in zip(base, other)]
  std = float(np.std(diffs, ddof=1)) if len(diffs) > 1 else 0.0
  return float(np.mean(diffs)), std, diffs


def main(argv: Sequence[str]) -> int:
  key = 'eval.eval/student_top1'
  args = list(argv)
  if '--key' in args:
    i = args.index('--key')
    key = args[i + 1]
    del args[i:i + 2]
  groups: dict[str, list[str]] = {}
  for pattern in args:
    matched = sorted(d for d in glob.glob(pattern) if os.path.exists(os.path.join(d, 'summary.json')))
    groups[pattern] = matched
  results = {}
  for pattern, dirs in groups.items():
    if not dirs:
      print(f'{pattern}: no finished runs')
      continue
    mean, std, values = aggregate(dirs, key)
    results[pattern] = values
    print(f'{pattern}: {key} = {mean:.4f} ± {std:.4f} over {len(values)} runs '
          f"({', '.join(f'{v:.4f}' for v in values)})")
  names = list(results)
  for name in names[1:]:
    if len(results[name]) != len(results[names[0]]):
      print(f'{name} - {names[0]}: not paired ({len(results[name])} vs '
            f'{len(results[names[0]])} runs)')
      continue
    mean, std, diffs = paired(results[names[0]], results[name])
    ahead = sum(d > 0 for d in diffs)
    print(f'{name} - {names[0]}: paired difference {mean:+.4f} ± {std:.4f} '
          f"({', '.join(f'{d:+.4f}' for d in diffs)}; ahead on {ahead} of {len(diffs)})")
  return 0


if __name__ == '__main__':
  sys.exit(main(sys.argv[1:]))
