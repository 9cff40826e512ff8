"""One self-contained HTML page over finished runs (`python -m kd_jax.report WORKDIR...`).

For every run: its loss and metric curves (read back from its TensorBoard events), its newest image
grids (teacher vs student, samples) and its summary numbers. Across runs: the size–quality–speed
table and a Pareto plot (params or FLOPs per example against the run's quality metric) with the
teachers and the runs trained without a teacher marked. Plots are matplotlib PNGs and images are
embedded as base64, so the page is one file that any browser opens offline.
"""
from __future__ import annotations

import base64
import dataclasses
import glob
import html
import io
import json
import os
import re
from typing import Any, Sequence

import numpy as np

from kd_jax import errors


@dataclasses.dataclass
class Point:
  """One model on the size–quality–speed plane."""
  run: str
  label: str
  role: str                    # 'teacher', 'distilled' or 'no teacher'
  params: int | None
  flops: float | None          # per example (per image for samplers: network FLOPs × NFE)
  metric: float | None
  metric_name: str             # 'top-1' (higher is better) or 'FID' (lower is better)
  speed: float | None = None   # images/s where measured


def _get(d: Any, *path: Any) -> Any:
  for key in path:
    if not isinstance(d, dict) or key not in d:
      return None
    d = d[key]
  return d


def points(run: str, s: dict[str, Any]) -> list[Point]:
  """The models a run's summary describes (the student, and its teacher(s) as reference points)."""
  trainer, out = s.get('trainer'), []
  has_teacher = 'teacher' in s or 'teachers' in s
  role = 'distilled' if has_teacher else 'no teacher'
  if trainer == 'classification':
    top1 = _get(s, 'test', 'test/student_top1')
    top1 = _get(s, 'eval', 'eval/student_top1') if top1 is None else top1
    out.append(Point(run, run, role, _get(s, 'student', 'params'),
                     _get(s, 'student', 'flops_per_example'), top1, 'top-1'))
    if 'teacher' in s:
      t_top1 = _get(s, 'test', 'test/teacher_top1')
      t_top1 = _get(s, 'eval', 'eval/teacher_top1') if t_top1 is None else t_top1
      out.append(Point(run, f"teacher of {run}", 'teacher', _get(s, 'teacher', 'params'),
                       _get(s, 'teacher', 'flops_per_example'), t_top1, 'top-1'))
  elif trainer == 'generator_distill':
    out.append(Point(run, run, role, _get(s, 'student', 'params'),
                     _get(s, 'student', 'flops_per_example'), _get(s, 'quality_student', 'fid'),
                     'FID', _get(s, 'student', 'images_per_sec')))
    out.append(Point(run, f'teacher of {run}', 'teacher', _get(s, 'teacher', 'params'),
                     _get(s, 'teacher', 'flops_per_example'), _get(s, 'quality_teacher', 'fid'),
                     'FID', _get(s, 'teacher', 'images_per_sec')))
  elif trainer == 'gan':
    g = s.get('generator') or {}
    out.append(Point(run, run, 'no teacher', g.get('params'), g.get('flops_per_example'),
                     _get(s, 'quality', 'fid'), 'FID', g.get('images_per_sec')))
  elif trainer == 'diffusion':
    for n, c in sorted((_get(s, 'student', 'cost') or {}).items(), key=lambda kv: int(kv[0])):
      out.append(Point(run, f"{run} ({c.get('sampler')} {n})", role, c.get('params'),
                       c.get('flops_per_image'), _get(s, 'student', 'quality', n, 'fid'), 'FID',
                       c.get('images_per_sec')))
    ref = _get(s, 'teacher', 'reference')
    if ref:
      fid = None
      for key, q in (_get(s, 'teacher', 'quality') or {}).items():
        if key == f"{ref.get('sampler')}_{ref.get('steps')}":
          fid = q.get('fid')
      out.append(Point(run, f"teacher of {run} ({ref.get('sampler')} {ref.get('steps')})",
                       'teacher', ref.get('params'), ref.get('flops_per_image'), fid, 'FID',
                       ref.get('images_per_sec')))
  return out


def read_scalars(workdir: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """Every scalar series of the run's TensorBoard events: tag → (steps, values)."""
  from tensorboard.backend.event_processing import event_accumulator  # pylint: disable=import-outside-toplevel
  from tensorboard.util import tensor_util  # pylint: disable=import-outside-toplevel
  acc = event_accumulator.EventAccumulator(workdir, size_guidance={'tensors': 0, 'scalars': 0})
  acc.Reload()
  out = {}
  for tag in acc.Tags().get('tensors', []):
    events = acc.Tensors(tag)
    values = [tensor_util.make_ndarray(e.tensor_proto) for e in events]
    if values and all(np.ndim(v) == 0 and np.issubdtype(np.asarray(v).dtype, np.number)
                      for v in values):
      out[tag] = (np.array([e.step for e in events]), np.array(values, np.float64))
  for tag in acc.Tags().get('scalars', []):
    events = acc.Scalars(tag)
    out[tag] = (np.array([e.step for e in events]), np.array([e.value for e in events]))
  return out


def _png(fig: Any) -> str:
  buf = io.BytesIO()
  fig.savefig(buf, format='png', dpi=90, bbox_inches='tight')
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  plt.close(fig)
  return base64.b64encode(buf.getvalue()).decode()


def _plt():
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  return plt


def curves_png(scalars: dict[str, tuple[np.ndarray, np.ndarray]]) -> str | None:
  """One panel per group (train losses, eval/final metrics), a line per tag."""
  groups: dict[str, list[str]] = {}
  for tag in sorted(scalars):
    prefix = tag.split('/')[0] if '/' in tag else 'other'
    if prefix == 'final' or tag.endswith('/raw') or len(scalars[tag][0]) < 2:
      continue  # one-point series are in the tables; '/raw' repeats the weighted terms unweighted
    if 'per_sec' in tag:
      prefix = 'speed'
    groups.setdefault(prefix, []).append(tag)
  groups = {k: v for k, v in groups.items() if any(len(scalars[t][0]) for t in v)}
  if not groups:
    return None
  plt = _plt()
  fig, axes = plt.subplots(1, len(groups), figsize=(5 * len(groups), 3.4), squeeze=False)
  for ax, (name, tags) in zip(axes[0], groups.items()):
    for tag in tags[:12]:
      steps, values = scalars[tag]
      ax.plot(steps, values, marker='o' if len(steps) < 4 else None, ms=3,
              label=tag.split('/', 1)[-1])
    ax.set_title(name)
    ax.set_xlabel('step')
    if name == 'train' and all(np.all(scalars[t][1] > 0) for t in tags[:12]):
      ax.set_yscale('log')
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
  return _png(fig)


def pareto_png(pts: Sequence[Point], x: str) -> str | None:
  """Quality against size (x = 'params' or 'flops'), one panel per metric; teachers and runs
  without a teacher marked; the frontier drawn through the non-dominated points."""
  by_metric: dict[str, list[Point]] = {}
  for p in pts:
    if p.metric is not None and getattr(p, x):
      by_metric.setdefault(p.metric_name, []).append(p)
  if not by_metric:
    return None
  plt = _plt()
  fig, axes = plt.subplots(1, len(by_metric), figsize=(6 * len(by_metric), 4.2), squeeze=False)
  style = {'teacher': ('*', 'tab:red', 160), 'distilled': ('o', 'tab:blue', 50),
           'no teacher': ('s', 'tab:gray', 50)}
  for ax, (name, ps) in zip(axes[0], by_metric.items()):
    higher = name == 'top-1'
    for role, (marker, color, size) in style.items():
      sel = [p for p in ps if p.role == role]
      if sel:
        ax.scatter([getattr(p, x) for p in sel], [p.metric for p in sel], marker=marker, c=color,
                   s=size, label=role, zorder=3)
    for p in ps:
      ax.annotate(p.label, (getattr(p, x), p.metric), fontsize=6, xytext=(3, 3),
                  textcoords='offset points')
    front, best = [], None
    for p in sorted(ps, key=lambda p: getattr(p, x)):
      if best is None or (p.metric > best if higher else p.metric < best):
        front.append(p)
        best = p.metric
    ax.plot([getattr(p, x) for p in front], [p.metric for p in front], '--', c='k', lw=0.8,
            label='frontier')
    sizes = [getattr(p, x) for p in ps]
    if max(sizes) > 10 * min(sizes):
      ax.set_xscale('log')
    ax.set_xlabel('parameters' if x == 'params' else 'FLOPs per example (image)')
    ax.set_ylabel(name + (' (higher is better)' if higher else ' (lower is better)'))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
  return _png(fig)


def newest_images(workdir: str) -> list[tuple[str, str]]:
  """(file name, base64) of the newest PNG of each kind in `<workdir>/images`."""
  newest: dict[str, tuple[int, str]] = {}
  for path in glob.glob(os.path.join(workdir, 'images', '*.png')):
    m = re.match(r'(.*?)_?(\d+)?\.png$', os.path.basename(path))
    kind, step = m.group(1), int(m.group(2) or 0)
    if kind not in newest or step > newest[kind][0]:
      newest[kind] = (step, path)
  out = []
  for kind in sorted(newest):
    with open(newest[kind][1], 'rb') as f:
      out.append((os.path.basename(newest[kind][1]), base64.b64encode(f.read()).decode()))
  return out


def _fmt(v: Any) -> str:
  if v is None:
    return '—'
  if isinstance(v, float):
    return f'{v:.4g}'
  if isinstance(v, int):
    return f'{v:,}'
  return html.escape(str(v))


def load_summary(workdir: str) -> dict[str, Any]:
  path = os.path.join(workdir, 'summary.json')
  if not os.path.exists(path):
    raise errors.ConfigError(f'{workdir!r} has no summary.json: pass the --workdir of finished '
                             'kd_jax runs.')
  with open(path) as f:
    return json.load(f)


def build_page(workdirs: Sequence[str], title: str = 'kd_jax report') -> str:
  """The HTML page for `workdirs` (each a finished run)."""
  runs = [(os.path.basename(os.path.normpath(w)) or w, w, load_summary(w)) for w in workdirs]
  pts: list[Point] = []
  seen_teachers: set[tuple[Any, ...]] = set()
  for name, _, s in runs:
    for p in points(name, s):
      key = (p.params, p.metric, p.metric_name)
      if p.role == 'teacher':
        if key in seen_teachers:
          continue  # the same teacher seen from several students
        seen_teachers.add(key)
      pts.append(p)
  parts = [f'<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>',
           '<style>body{font-family:sans-serif;margin:24px;max-width:1400px}'
           'table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;'
           'padding:3px 8px;text-align:right}td:first-child,th:first-child{text-align:left}'
           'img{max-width:100%;image-rendering:pixelated}h2{border-top:1px solid #ddd;'
           'padding-top:12px}</style></head><body>',
           f'<h1>{html.escape(title)}</h1>',
           f'<p>{len(runs)} run(s): ' + ', '.join(html.escape(w) for w in workdirs) + '</p>',
           '<h2>Size, quality, speed</h2><table><tr><th>model</th><th>role</th><th>params</th>'
           '<th>FLOPs / example</th><th>metric</th><th>value</th><th>images/s</th></tr>']
  for p in pts:
    parts.append(f'<tr><td>{html.escape(p.label)}</td><td>{p.role}</td><td>{_fmt(p.params)}</td>'
                 f'<td>{_fmt(p.flops)}</td><td>{p.metric_name}</td><td>{_fmt(p.metric)}</td>'
                 f'<td>{_fmt(p.speed)}</td></tr>')
  parts.append('</table>')
  for x in ('params', 'flops'):
    img = pareto_png(pts, x)
    if img:
      parts.append(f'<h3>Pareto: quality vs {x}</h3><img alt="pareto {x}" '
                   f'src="data:image/png;base64,{img}">')
  for name, workdir, s in runs:
    parts.append(f'<h2 id="{html.escape(name)}">{html.escape(name)}</h2>'
                 f"<p>trainer <b>{html.escape(str(s.get('trainer')))}</b>, {_fmt(s.get('step'))} "
                 f"steps, {_fmt(s.get('train_seconds'))} s; {html.escape(workdir)}</p>")
    scalars = read_scalars(workdir)
    curves = curves_png(scalars)
    if curves:
      parts.append(f'<img alt="curves of {html.escape(name)}" src="data:image/png;base64,'
                   f'{curves}">')
    final = {k: v for k, v in (s.get('eval') or {}).items() if isinstance(v, (int, float))}
    final.update({k: v for k, v in (s.get('test') or {}).items() if isinstance(v, (int, float))})
    if final:
      parts.append('<table>' + ''.join(f'<tr><td>{html.escape(k)}</td><td>{_fmt(v)}</td></tr>'
                                       for k, v in sorted(final.items())) + '</table>')
    for fname, data in newest_images(workdir):
      parts.append(f'<p>{html.escape(fname)}</p><img alt="{html.escape(fname)}" '
                   f'src="data:image/png;base64,{data}">')
  parts.append('</body></html>')
  return '\n'.join(parts)


def write(workdirs: Sequence[str], out: str, title: str = 'kd_jax report') -> str:
  """Writes the page atomically to `out`; returns its path."""
  page = build_page(workdirs, title)
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  tmp = f'{out}.tmp{os.getpid()}'
  with open(tmp, 'w') as f:
    f.write(page)
  os.replace(tmp, out)
  return out
