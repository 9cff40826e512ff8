"""Aggregate a study: mean ± std of one summary.json entry over the runs (seeds) matching globs.

  python -m kd_jax.study workdirs/fm_scratch_s* workdirs/fm_kd_s* --key eval.eval/student_top1
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
  for pattern, dirs in groups.items():
    if not dirs:
      print(f'{pattern}: no finished runs')
      continue
    mean, std, values = aggregate(dirs, key)
    print(f'{pattern}: {key} = {mean:.4f} ± {std:.4f} over {len(values)} runs '
          f"({', '.join(f'{v:.4f}' for v in values)})")
  return 0


if __name__ == '__main__':
  sys.exit(main(sys.argv[1:]))
