"""The diffusion study over finished runs: FID against NFE, one table, one grid on shared noise.

  python -m kd_jax.report.diffusion_study RUN... [--teacher pretrained:fashion_mnist/edm]
      [--out DIR] [--grid]

Reads each run's `summary.json` (a `diffusion` run, or a `progressive_distill` chain: every round)
and the teacher's (its workdir or the shipped manifest's metrics). Points:

  teacher, full sampler  the teacher's own evaluation (e.g. Heun 18 = 35 NFE)
  teacher, k steps       the teacher scored at the students' step counts inside the students' runs
                         (`eval.teacher_steps`, same seed and samples as the students)
  each student           its FID at each step count it was evaluated with

Writes `DIR/fid_vs_nfe.png` (log-log, a line per method), `DIR/study.md` (NFE, params, FLOPs per
image and the reduction against the teacher's full sampler, FID and its ratio to the teacher's,
KID, precision, recall, images/s) and, with `--grid`, `DIR/grid.png`: the teacher at its full
sampler, the teacher at each student step count, and every student on the same initial noise
(`eval.seed`, the noise the runs' own grids use).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from typing import Any, Sequence

import numpy as np

from kd_jax import errors, run_identity
from kd_jax import pretrained as pretrained_lib

MODE_NAMES = {'teacher': 'teacher', 'compress': 'compressed U-Net', 'progressive': 'progressive',
              'consistency': 'consistency', 'dmd': 'DMD2'}


@dataclasses.dataclass
class Point:
  """One (model, sampler, step count) with its quality and cost."""
  method: str
  workdir: str
  sampler: str
  steps: int
  nfe: int
  params: int | None
  flops_per_image: float | None
  images_per_sec: float | None
  quality: dict[str, Any]


def _read_json(path: str, what: str) -> dict[str, Any]:
  if not os.path.exists(path):
    raise errors.ConfigError(f'{what}: {path!r} does not exist; pass the --workdir of finished '
                             'kd_jax diffusion runs.')
  with open(path) as f:
    return json.load(f)


def _nfe(sampler: str, steps: int) -> int:
  return 2 * steps - 1 if sampler == 'heun' else steps


def teacher_summary(teacher: str) -> dict[str, Any]:
  """The teacher's own summary: its workdir's `summary.json`, or a shipped teacher's manifest."""
  if teacher.startswith(pretrained_lib.PREFIX):
    entries = pretrained_lib.manifest()
    name = teacher[len(pretrained_lib.PREFIX):]
    pretrained_lib.path_of(name, '--teacher')  # the clear error for an unknown name
    return entries[name]['metrics']
  return _read_json(os.path.join(teacher, 'summary.json'), f'--teacher={teacher!r}')


def _student_points(method: str, workdir: str, s: dict[str, Any]) -> list[Point]:
  st = s.get('student', {})
  out = []
  for n, q in sorted(st.get('quality', {}).items(), key=lambda kv: int(kv[0])):
    c = st.get('cost', {}).get(n, {})
    sampler = c.get('sampler', st.get('sampler', ''))
    out.append(Point(method, workdir, sampler, int(n), int(c.get('nfe', _nfe(sampler, int(n)))),
                     c.get('params'), c.get('flops_per_image'), c.get('images_per_sec'), q))
  return out


def _teacher_points(s: dict[str, Any], workdir: str, flops_per_nfe: float | None,
                    params: int | None) -> list[Point]:
  """The teacher scored at other step counts inside a student's run (`<sampler>_<steps>` keys)."""
  out = []
  for key, q in s.get('teacher', {}).get('quality', {}).items():
    sampler, _, n = key.rpartition('_')
    nfe = _nfe(sampler, int(n))
    out.append(Point('teacher', workdir, sampler, int(n), nfe, params,
                     flops_per_nfe * nfe if flops_per_nfe else None, None, q))
  return out


def collect(workdirs: Sequence[str], teacher: str) -> tuple[list[Point], list[Point]]:
  """(teacher points, student points); the teacher's measured at several step counts once each."""
  t = teacher_summary(teacher)
  t_points = _student_points('teacher', teacher, t)
  if not t_points:
    raise errors.ConfigError(f'--teacher={teacher!r} has no measured quality (student.quality in '
                             'its summary): evaluate the teacher run first.')
  full = t_points[0]
  per_nfe = full.flops_per_image / full.nfe if full.flops_per_image else None
  students: list[Point] = []
  seen = {(p.sampler, p.steps) for p in t_points}
  for workdir in workdirs:
    s = _read_json(os.path.join(workdir, 'summary.json'), workdir)
    if s.get('trainer') == 'progressive_distill':
      rounds = [(n, s['round_workdirs'][str(n)] if str(n) in s['round_workdirs']
                 else s['round_workdirs'][n]) for n in s['rounds']]
      label = f'progressive ({os.path.basename(os.path.normpath(workdir))})'
      runs = [(label, d, _read_json(os.path.join(d, 'summary.json'), d)) for _, d in rounds]
    elif s.get('trainer') == 'diffusion':
      mode = (run_identity.read(workdir) or {}).get('mode', '')
      label = f'{MODE_NAMES.get(mode, mode)} ({os.path.basename(os.path.normpath(workdir))})'
      runs = [(label, workdir, s)]
    else:
      raise errors.ConfigError(f'{workdir!r} is a {s.get("trainer")!r} run, not a diffusion run.')
    for label, d, rs in runs:
      students.extend(_student_points(label, d, rs))
      own = rs.get('teacher', {}).get('checkpoint')
      if own and os.path.normpath(own) != os.path.normpath(teacher):
        # A run distilled from another teacher (e.g. the compressed U-Net a `:compressed` chain
        # starts from) scored *that* teacher: its own baseline, at its own size and cost.
        ref = rs['teacher'].get('reference', {})
        name = f'its teacher {os.path.basename(os.path.normpath(own))} (of {label})'
        for p in _teacher_points(rs, d, ref.get('flops_per_nfe'), ref.get('params')):
          students.append(dataclasses.replace(p, method=name))
        continue
      for p in _teacher_points(rs, d, per_nfe, full.params):
        if (p.sampler, p.steps) not in seen:  # the same seed and samples: measured once is enough
          seen.add((p.sampler, p.steps))
          t_points.append(p)
  return sorted(t_points, key=lambda p: (p.sampler != full.sampler, -p.nfe)), students


def _f(v: Any, fmt: str) -> str:
  return '—' if v is None else format(v, fmt)


def table(t_points: Sequence[Point], students: Sequence[Point]) -> str:
  """Markdown: one row per point; ratios against the teacher's full sampler (the first point)."""
  full = t_points[0]
  fid0, flops0 = full.quality['fid'], full.flops_per_image
  head = ('| model | sampler | steps | NFE | params | MFLOPs/image | FLOPs ÷ | FID | × teacher | KID '
          '| precision | recall | images/s |\n|' + '---|' * 13 + '\n')
  rows = []
  for p in list(t_points) + list(students):
    q = p.quality
    red = flops0 / p.flops_per_image if (flops0 and p.flops_per_image) else None
    rows.append(
        f'| {p.method} | {p.sampler} | {p.steps} | {p.nfe} | {_f(p.params, ",")} | '
        f'{_f(p.flops_per_image and p.flops_per_image / 1e6, ".1f")} | {_f(red, ".1f")} | '
        f'{q["fid"]:.2f} | {q["fid"] / fid0:.2f} | {_f(q.get("kid"), ".2f")} | '
        f'{_f(q.get("precision"), ".3f")} | {_f(q.get("recall"), ".3f")} | '
        f'{_f(p.images_per_sec, ".1f")} |')
  return head + '\n'.join(rows) + '\n'


def plot(t_points: Sequence[Point], students: Sequence[Point], path: str) -> str:
  """FID against NFE, log-log: the teacher per sampler, each method as a line over its steps."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  fig, ax = plt.subplots(figsize=(6.4, 4.4))
  groups: dict[str, list[Point]] = {}
  for p in t_points:
    groups.setdefault(f'teacher ({p.sampler})', []).append(p)
  for p in students:
    groups.setdefault(p.method, []).append(p)
  for name, pts in groups.items():
    pts = sorted(pts, key=lambda p: p.nfe)
    style = dict(marker='*', markersize=12) if name.startswith('teacher') and len(pts) == 1 else \
        dict(marker='o', linestyle='--' if name.startswith('teacher') else '-')
    ax.plot([p.nfe for p in pts], [p.quality['fid'] for p in pts], label=name, **style)
  ax.set_xscale('log', base=2)
  ax.set_yscale('log')
  ax.set_xlabel('network evaluations per image (NFE)')
  ax.set_ylabel('FID (classifier features, 10k samples)')
  ax.grid(True, which='both', alpha=0.3)
  ax.legend(fontsize=7)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, dpi=110, bbox_inches='tight')
  plt.close(fig)
  return path


def grid(t_points: Sequence[Point], students: Sequence[Point], teacher: str, path: str,
         n: int = 16, seed: int = 1234) -> str:
  """Every point's first `n` samples from the same initial noise, a labelled row each."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from kd_jax import report  # pylint: disable=import-outside-toplevel
  from kd_jax import teacher as teacher_lib  # pylint: disable=import-outside-toplevel
  from kd_jax.diffusion import edm  # pylint: disable=import-outside-toplevel
  from kd_jax.trainers import diffusion_eval  # pylint: disable=import-outside-toplevel

  shape = tuple(teacher_lib.check_exports(teacher, 'denoiser', '--teacher')['image_shape'])
  noise = jax.random.normal(jax.random.key(seed), (n, *shape))
  x0 = jnp.zeros((1, *shape), jnp.float32)
  nets: dict[str, Any] = {}
  rows = []
  for p in list(t_points) + list(students):
    d = teacher if p.method == 'teacher' else p.workdir
    if d not in nets:
      nets[d] = teacher_lib.restore_teacher(d, {}, role='denoiser', init_args=(x0, jnp.ones((1,))),
                                            init_kwargs={'train': False}, field='--grid run')
    ident = run_identity.read(d) if not d.startswith(pretrained_lib.PREFIX) else None
    sig = {k: float((ident or {}).get(f'sigma.{k}', default)) for k, default in
           (('sigma_min', edm.SIGMA_MIN), ('sigma_max', edm.SIGMA_MAX), ('rho', edm.RHO))}
    fn = diffusion_eval.make_sampler(nets[d].module, p.sampler, p.steps, seed=seed, **sig)
    rows.append((f'{p.method} {p.sampler} {p.steps}', np.asarray(fn(nets[d].variables, noise,
                                                                    None))))
  report.save_png(path, report.side_by_side(rows, ncols=n))
  return path


def write(workdirs: Sequence[str], teacher: str, out: str, with_grid: bool = False
          ) -> dict[str, str]:
  t_points, students = collect(workdirs, teacher)
  os.makedirs(out, exist_ok=True)
  paths = {'plot': plot(t_points, students, os.path.join(out, 'fid_vs_nfe.png'))}
  md = os.path.join(out, 'study.md')
  with open(md, 'w') as f:
    f.write(f'# Diffusion study: teacher `{teacher}`\n\n' + table(t_points, students))
  paths['table'] = md
  if with_grid:
    paths['grid'] = grid(t_points, students, teacher, os.path.join(out, 'grid.png'))
  return paths


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog='python -m kd_jax.report.diffusion_study',
                                   description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('workdirs', nargs='+', help='finished diffusion runs (their --workdir)')
  parser.add_argument('--teacher', default='pretrained:fashion_mnist/edm',
                      help="the teacher's workdir or pretrained:<name>")
  parser.add_argument('--out', default='workdirs/diffusion_study')
  parser.add_argument('--grid', action='store_true',
                      help='also sample every model on the same noise (restores each export)')
  args = parser.parse_args(argv)
  from kd_jax import quiet  # pylint: disable=import-outside-toplevel
  quiet.install(verbose=False)  # orbax's "Metadata file does not exist" on every restore
  try:
    paths = write(args.workdirs, args.teacher, args.out, args.grid)
  except errors.KDError as e:
    print(f'kd_jax: error: {e}', file=sys.stderr)
    return 2
  for what, path in paths.items():
    print(f'[kd_jax] {what}: {path}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
