"""Progressive distillation, all rounds (Salimans & Ho 2022, Alg. 2): each round halves the steps.

Round k trains a student with N_k = start_steps / 2^k DDIM steps from the teacher of round k, which
is the student of round k−1 (round 1's teacher: `config.teacher.checkpoint`). Each round is an
ordinary `diffusion` run in mode 'progressive' in `<workdir>/steps_<N_k>` (its own checkpoints,
bitwise resume, summary, grids); a finished round is skipped, so rerunning the same command
resumes the chain. Round 1 also scores the original teacher at every step count of the chain
(`eval.teacher_steps`): the baseline each student must beat.

Config: a `diffusion` config with `progressive.start_steps` (the first teacher's steps),
`progressive.end_steps` (the last student's) and `progressive.round_steps` (training steps per
round; `total_steps` is their sum and is set here).
"""
from __future__ import annotations

import copy
import json
import os
from typing import Any

import ml_collections

from kd_jax import checkpoint as ckpt_lib
from kd_jax import config_utils, errors, parallel
from kd_jax.trainers import diffusion


def default_config() -> ml_collections.ConfigDict:
  c = diffusion.default_config()
  c.trainer = 'progressive_distill'
  c.mode = 'progressive'
  c.progressive.start_steps = 16
  c.progressive.end_steps = 1
  c.progressive.round_steps = 500
  return c


def rounds(start: int, end: int) -> list[int]:
  """The student step counts of the chain: start/2, start/4, …, end (powers-of-two halvings)."""
  config_utils.check_count(start, 'config.progressive.start_steps', low=2)
  config_utils.check_count(end, 'config.progressive.end_steps')
  out, n = [], start
  while n > end:
    if n % 2:
      raise errors.ConfigError(f'config.progressive.start_steps={start} cannot be halved down to '
                               f'end_steps={end}; use start = end · 2^k (e.g. 16 → 1).')
    n //= 2
    out.append(n)
  if not out or out[-1] != end:
    raise errors.ConfigError(f'config.progressive.start_steps={start} must be end_steps={end} · '
                             '2^k with k ≥ 1 (e.g. start 16, end 1).')
  return out


def round_config(config: ml_collections.ConfigDict, student_steps: int, teacher: str,
                 first: bool) -> ml_collections.ConfigDict:
  """The `diffusion` config of one round."""
  c = ml_collections.ConfigDict(copy.deepcopy(config_utils.to_dict(config)))
  c.trainer, c.mode = 'diffusion', 'progressive'
  for field in ('start_steps', 'end_steps', 'round_steps'):
    del c.progressive[field]
  c.progressive.student_steps = student_steps
  c.total_steps = int(config.progressive.round_steps)
  c.teacher.checkpoint = teacher
  c.model = {}  # the student is the teacher's architecture (it starts from its weights)
  c.eval.sampler, c.eval.steps = 'euler', [student_steps]
  c.eval.teacher_sampler = 'euler'
  c.eval.teacher_steps = ([2 * student_steps] + rounds(int(config.progressive.start_steps),
                                                       int(config.progressive.end_steps))
                          if first else [])
  if not first:
    # The round's teacher is the previous student: its own sampler (Euler, 2N steps) is the
    # reference its student's grids and PSNR compare against, not the first teacher's Heun 18
    # (which would cost 35 NFE per pair and compare against a sampler this net was never meant for).
    c.eval.reference_sampler, c.eval.reference_steps = 'euler', 2 * student_steps
  return c


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Runs every round into `<workdir>/steps_<N>`; returns and writes the chain's summary."""
  config_utils.check_fields(config, default_config())
  if config.mode != 'progressive':
    raise errors.ConfigError("config.trainer='progressive_distill' runs config.mode='progressive' "
                             f'rounds; got mode={config.mode!r}.')
  chain = rounds(int(config.progressive.start_steps), int(config.progressive.end_steps))
  config_utils.check_count(config.progressive.round_steps, 'config.progressive.round_steps')
  if not config.teacher.checkpoint:
    raise errors.ConfigError('config.teacher.checkpoint is empty: set it to the diffusion teacher '
                             "run (or 'pretrained:fashion_mnist/edm').")
  ckpt_lib.ensure_workdir(workdir)
  teacher, results = config.teacher.checkpoint, {}
  for i, n in enumerate(chain):
    round_dir = os.path.join(workdir, f'steps_{n}')
    done = os.path.join(round_dir, 'summary.json')
    if os.path.exists(done):
      with open(done) as f:
        results[n] = json.load(f)
    else:
      results[n] = diffusion.train_and_evaluate(round_config(config, n, teacher, i == 0),
                                                round_dir)
    teacher = round_dir
  summary = {'trainer': 'progressive_distill', 'rounds': chain,
             'round_workdirs': {n: os.path.join(workdir, f'steps_{n}') for n in chain},
             'results': results}
  if parallel.is_chief():
    with open(os.path.join(workdir, 'summary.json'), 'w') as f:
      json.dump(summary, f, indent=1, default=str)
  return summary
