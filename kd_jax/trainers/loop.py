"""The one training loop every trainer runs on.

A trainer describes its run as a `Task` (pure init/step functions plus host-side evaluation); this
module owns everything around it: mesh and shardings, jit with buffer donation, resuming from the
workdir, periodic metrics/evaluation/checkpoints, the progress line, and `summary.json`.

Data flows one way: config → data iterator → `step(state, teacher, batch, rng)` → metrics/writers/
checkpoints.
"""
from __future__ import annotations

import bisect
import dataclasses
import json
import time
from typing import Any, Callable, Iterator, Mapping, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from kd_jax import checkpoint as ckpt_lib
from kd_jax import config_utils, errors, parallel, report, run_identity
from kd_jax import preemption as preemption_lib
from kd_jax.types import Array, Batch, PyTree


LOOP_FIELDS = ('seed', 'total_steps', 'log_every', 'eval_every', 'checkpoint_every',
               'keep_checkpoints')


def default_config(**fields: Any) -> ml_collections.ConfigDict:
  """The loop's fields, which every trainer's `default_config` extends with its own.

  seed: the root of every random stream; total_steps: steps to train (may be raised to extend a
  finished run); log_every: steps per progress line and TensorBoard point; eval_every: steps per
  evaluation (0: only at the end); checkpoint_every: steps per checkpoint; keep_checkpoints: how
  many to keep; mesh.model: devices a teacher is sharded over.
  """
  c = ml_collections.ConfigDict(dict(seed=0, total_steps=1000, log_every=100, eval_every=0,
                                     checkpoint_every=500, keep_checkpoints=2))
  # mesh.model: devices one frozen teacher is sharded over (1: replicated; see kd_jax.parallel).
  # A placement, not part of the run: a run may resume on another mesh.
  c.mesh = ml_collections.ConfigDict(dict(model=1))
  c.update(fields)
  return c


@dataclasses.dataclass(frozen=True)
class Settings:
  """The loop's fields as plain values, read once from the config at the trainer boundary."""
  trainer: str
  seed: int
  total_steps: int
  log_every: int
  eval_every: int
  checkpoint_every: int
  keep_checkpoints: int
  hparams: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  # The run's defining fields (see kd_jax.run_identity); empty: not checked.
  identity: Mapping[str, Any] = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    for name, (low, meaning) in _RANGES.items():
      config_utils.check_count(getattr(self, name), f'config.{name}', low=low, meaning=meaning)

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict) -> 'Settings':
    hparams = {k: v for k, v in config_utils.flatten(config).items()
               if isinstance(v, (int, float, str, bool))}
    return cls(config.trainer, *(config[f] for f in LOOP_FIELDS), hparams=hparams,
               identity=run_identity.of_config(config))


_RANGES = {'seed': (None, ''), 'total_steps': (1, 'steps to train'),
           'log_every': (1, 'steps per progress line'),
           'eval_every': (0, 'steps per evaluation; 0 evaluates only at the end'),
           'checkpoint_every': (1, 'steps per checkpoint'),
           'keep_checkpoints': (1, 'checkpoints kept')}


@dataclasses.dataclass
class Task:
  """What a trainer plugs into the shared loop.

  Attributes:
    init: `rng -> state`, pure (jitted here, placed replicated).
    step: `(state, teacher, batch, rng) -> (state, metrics)`, pure; `rng` is the run's root key. A
      run with stages gives one step function per stage (each compiled once) and `stage_ends`.
    teacher: frozen pytree passed to every step as its own argument (None when there is no teacher).
    train_batches: iterator of per-process numpy batches with grain's `get_state`/`set_state`.
    evaluate: host-side `(state, step, writer) -> {name: float}`; runs on every process (it may use
      collectives), only process 0's writer writes.
    export: pure `state -> pytree` of the variables a later run may restore (e.g. as a teacher).
    meta: JSON-able description saved with every checkpoint (model configs, dataset, trainer).
    finalize: host-side `(state, writer) -> {name: value}` extra summary entries at the end of the run.
    stage_ends: with several step functions, the last step of each stage (increasing; the last one
      is `config.total_steps`).
  """
  init: Callable[[Array], PyTree]
  step: (Callable[[PyTree, PyTree, Batch, Array], tuple[PyTree, Mapping[str, Array]]]
         | Sequence[Callable[[PyTree, PyTree, Batch, Array], tuple[PyTree, Mapping[str, Array]]]])
  teacher: PyTree
  train_batches: Iterator[Mapping[str, np.ndarray]]
  evaluate: Callable[[PyTree, int, Any], dict[str, float]]
  export: Callable[[PyTree], PyTree]
  meta: Mapping[str, Any]
  finalize: Callable[[PyTree, Any], dict[str, Any]] | None = None
  stage_ends: Sequence[int] = ()

  def step_functions(self) -> list[Callable[..., Any]]:
    return list(self.step) if isinstance(self.step, (list, tuple)) else [self.step]


def _format_eta(seconds: float) -> str:
  seconds = int(max(0, seconds))
  return f'{seconds // 3600}h{seconds % 3600 // 60:02d}m{seconds % 60:02d}s'


def _with_finite_flags(step_fn: Callable[..., Any]) -> Callable[..., Any]:
  """The step, also returning `[metrics finite, new state finite]` computed on device.

  Two fused reductions per step; the host reads the flags only before a save or a progress line.
  """
  def step(state, teacher, batch, rng):
    state, metrics = step_fn(state, teacher, batch, rng)
    return state, metrics, jnp.stack([_all_finite(metrics), _all_finite(state)])
  return step


def _all_finite(tree: PyTree) -> Array:
  leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)
            if jnp.issubdtype(jnp.asarray(x).dtype, jnp.inexact)]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.bool_(True)


def _divergence(step: int, metrics: Mapping[str, float], state_finite: bool,
                last_saved: int | None) -> errors.DivergedError:
  """One line: the step, the non-finite values (raw and weighted), the saved step, the fix."""
  terms = sorted(k for k in metrics if not k.endswith('/raw') and k + '/raw' in metrics)

  def term(k: str) -> str:
    raw, weighted = metrics[k + '/raw'], metrics[k]
    return f'{k}={weighted:.3g} (raw {raw:.3g})'

  bad = [k for k in sorted(metrics) if not np.isfinite(metrics[k]) and not k.endswith('/raw')]
  bad_terms = [k for k in terms if k in bad or not np.isfinite(metrics[k + '/raw'])]
  what = []
  if bad_terms:
    what.append('loss terms ' + ', '.join(term(k) for k in bad_terms))
  other = [k for k in bad if k not in bad_terms]
  if other:
    what.append(', '.join(f'{k}={metrics[k]:.3g}' for k in other))
    if not bad_terms and terms:
      # A finite loss with a non-finite gradient: the largest weighted terms are the suspects.
      big = sorted(terms, key=lambda k: -abs(metrics[k]))[:3]
      what.append('largest weighted terms ' + ', '.join(term(k) for k in big))
  if not state_finite and not bad:
    what.append('the updated parameters or optimizer state')
  saved = (f'the newest checkpoint, step {last_saved}, is finite' if last_saved is not None
           else 'no checkpoint was written')
  return errors.DivergedError(
      f'training diverged at step {step}: non-finite {"; ".join(what)}. Nothing non-finite was '
      f'saved: {saved}. Lower config.optimizer.learning_rate or the loss weights and start a new '
      '--workdir.')


def run(task: Task, settings: Settings, workdir: str, mesh: jax.sharding.Mesh) -> dict[str, Any]:
  """Trains `task` for `settings.total_steps`, resuming from `workdir` if it holds a checkpoint.

  Raises:
    errors.CheckpointError: the workdir belongs to a run with another config, or no checkpoint in
      it can be restored (nothing in the workdir is written or moved in either case).
    errors.DivergedError: a step produced a non-finite value (nothing non-finite is saved).
    errors.Preempted: SIGTERM/SIGINT arrived; a checkpoint at the current step was saved.
  """
  with preemption_lib.Preemption() as preemption:
    return _run(task, settings, workdir, mesh, preemption)


def _run(task: Task, settings: Settings, workdir: str, mesh: jax.sharding.Mesh,
         preemption: preemption_lib.Preemption) -> dict[str, Any]:
  chief = parallel.is_chief()
  repl = parallel.replicated(mesh)
  batch_sh = parallel.batch_sharding(mesh)
  root_key = jax.random.key(settings.seed)

  # Another run's workdir is refused before anything in it is written.
  if settings.identity:
    run_identity.check_workdir(workdir, settings.identity)
  checkpointer = ckpt_lib.Checkpointer(workdir, save_every=settings.checkpoint_every,
                                       keep=settings.keep_checkpoints)
  state, start = _init_or_restore(task, checkpointer, root_key, repl, settings.identity)
  if chief and settings.identity:
    run_identity.record(workdir, settings.identity)
  if start > settings.total_steps:
    raise errors.ConfigError(
        f'config.total_steps={settings.total_steps} is below the step of the checkpoint in '
        f'{workdir} ({start}); a run cannot be shortened: set config.total_steps >= {start}.')
  if start and chief:
    print(f'[kd_jax] resuming {workdir} from step {start}', flush=True)
  # Imported here: clu's writers import TensorFlow (~4 s), which a config that fails its checks,
  # and every --help, should not wait for.
  from clu import metric_writers  # pylint: disable=import-outside-toplevel
  writer = metric_writers.create_default_writer(workdir, just_logging=not chief, asynchronous=True)
  if start == 0 and chief:
    writer.write_hparams(dict(settings.hparams))

  # Donating the state lets XLA update params/optimizer buffers in place.
  # The teacher keeps the placement its trainer chose (`parallel.place_teacher`: replicated, or
  # sharded over the mesh's `model` axis).
  teacher = task.teacher if task.teacher is not None else {}
  teacher_sh = jax.tree.map(lambda a: a.sharding if isinstance(a, jax.Array) else repl, teacher)
  step_fns = [jax.jit(_with_finite_flags(f), donate_argnums=(0,),
                      in_shardings=(repl, teacher_sh, batch_sh, repl),
                      out_shardings=(repl, repl, repl))
              for f in task.step_functions()]
  stage_ends = list(task.stage_ends) or [int(settings.total_steps)]
  if len(stage_ends) != len(step_fns) or stage_ends[-1] != int(settings.total_steps):
    raise ValueError(f'Task has {len(step_fns)} step functions but stage_ends={stage_ends} '
                     f'(must end at total_steps={settings.total_steps}).')
  history: list[dict[str, Any]] = []

  t_start = time.perf_counter()
  try:
    state = _train(task, settings, mesh, state, start, step_fns, stage_ends, teacher, writer,
                   checkpointer, root_key, history, preemption)
  finally:
    # Also on an exception (divergence, preemption): let in-flight asynchronous writes finish.
    checkpointer.wait()
    writer.flush()
  total = int(settings.total_steps)
  if start >= total:
    logging.info('Nothing to train: checkpoint step %d >= total_steps %d.', start, total)
  last_eval = task.evaluate(state, total, writer)
  writer.write_scalars(total, last_eval)
  history.append({'step': total, **last_eval})
  extra = task.finalize(state, writer) if task.finalize else {}
  writer.flush()
  checkpointer.close()
  summary = {'workdir': workdir, 'step': total, 'trainer': settings.trainer,
             'train_seconds': time.perf_counter() - t_start, 'eval': last_eval,
             # Evaluations of this invocation (a resumed run lists those after the resume).
             'eval_history': history, **extra}
  if chief:
    report.write_summary(f'{workdir}/summary.json', summary)
  return summary


def _init_or_restore(task: Task, checkpointer: ckpt_lib.Checkpointer, root_key: Array,
                     repl: jax.sharding.Sharding, identity: Mapping[str, Any]
                     ) -> tuple[PyTree, int]:
  """The newest intact checkpoint's state (and data-iterator position), or a fresh init at step 0."""
  if checkpointer.latest_step() is None:
    return jax.jit(task.init, out_shardings=repl)(root_key), 0

  def abstract(tree: PyTree) -> PyTree:
    return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=repl), tree)
  abstract_state = jax.eval_shape(task.init, root_key)
  restored = checkpointer.restore_newest_intact(
      abstract(abstract_state), abstract(jax.eval_shape(task.export, abstract_state)), identity)
  if restored is None:
    return jax.jit(task.init, out_shardings=repl)(root_key), 0
  state, data_state, start = restored
  if data_state:
    task.train_batches.set_state(data_state)
  logging.info('Resumed from %s at step %d.', checkpointer.directory, start)
  return state, start


def _check_finite(flags: list[Array], pending: Sequence[Mapping[str, Array]], step: int,
                  last_saved: int | None) -> None:
  """Reads the finiteness flags of the steps since the last check (one transfer) and clears them;
  DivergedError for the first non-finite one."""
  if not flags:
    return
  values = parallel.fetch(jnp.stack(flags))
  n = len(flags)
  flags.clear()
  bad = np.flatnonzero(~values.all(axis=1))
  if bad.size:
    i = int(bad[0])
    # `pending` holds at least the steps since the last check (it is cleared at progress lines,
    # which also check), so the bad step's metrics are its i-th entry from the end minus n.
    metrics = parallel.fetch(pending[len(pending) - n + i])
    raise _divergence(step - n + 1 + i, {k: float(v) for k, v in metrics.items()},
                      bool(values[i, 1]), last_saved)


def _train(task: Task, settings: Settings, mesh: jax.sharding.Mesh,
           state: PyTree, start: int, step_fns: Sequence[Callable[..., Any]],
           stage_ends: Sequence[int], teacher: PyTree, writer: Any,
           checkpointer: ckpt_lib.Checkpointer, root_key: Array,
           history: list[dict[str, Any]], preemption: preemption_lib.Preemption) -> PyTree:
  """Steps start+1..total: metrics every `log_every`, evaluation, checkpoints; returns the state.

  Per step: a checkpoint when due, at the last step, or when preempted (then it stops), always after
  the finiteness flags of every step since the last check passed.
  """
  chief = parallel.is_chief()
  total = int(settings.total_steps)
  pending: list[Mapping[str, Array]] = []
  flags: list[Array] = []
  t_last, steps_since = time.perf_counter(), 0
  for step in range(start + 1, total + 1):
    local = next(task.train_batches)
    batch = parallel.to_global(local, mesh)
    # Stage i covers steps (stage_ends[i-1], stage_ends[i]].
    stage = bisect.bisect_left(stage_ends, step)
    state, metrics, finite = step_fns[stage](state, teacher, batch, root_key)
    pending.append(metrics)
    flags.append(finite)
    steps_since += 1
    log = step % settings.log_every == 0 or step == total
    # Every process asks every step: in a multi-process run JAX's protocol counts the calls.
    preempted = preemption.reached(step)
    save = preempted or step == total or checkpointer.manager.should_save(step)
    if log or save:
      _check_finite(flags, pending, step, checkpointer.latest_step())
    if log:
      # One device→host transfer per log period keeps the host out of the step loop.
      stacked = parallel.fetch(pending)
      # Keys are averaged over the steps that logged them (stages may log different terms).
      keys = dict.fromkeys(k for m in stacked for k in m)
      avg = {k: float(np.mean([m[k] for m in stacked if k in m])) for k in keys}
      pending.clear()
      now = time.perf_counter()
      rate = steps_since / max(now - t_last, 1e-9)
      t_last, steps_since = now, 0
      avg['steps_per_sec'] = rate
      writer.write_scalars(step, {f'train/{k}': v for k, v in avg.items()})
      if chief:
        eta = (total - step) / max(rate, 1e-9)
        terms = ' '.join(f'{k}={v:.4g}' for k, v in sorted(avg.items())
                         if k != 'steps_per_sec' and '/' not in k)
        print(f'[kd_jax] step {step}/{total} {terms} | {rate:.2f} step/s | ETA {_format_eta(eta)}',
              flush=True)
    if save:
      # Before evaluating: a preemption during a long evaluation then loses nothing.
      _save(checkpointer, task, state, step, force=preempted or step == total,
            identity=settings.identity)
    if preempted:
      checkpointer.wait()
      raise errors.Preempted(preemption.signum, step)
    if settings.eval_every and (step % settings.eval_every == 0) and step != total:
      last_eval = task.evaluate(state, step, writer)
      writer.write_scalars(step, last_eval)
      history.append({'step': step, **last_eval})
  return state


def _save(checkpointer: ckpt_lib.Checkpointer, task: Task, state: PyTree, step: int,
          force: bool, identity: Mapping[str, Any]) -> None:
  data_state = task.train_batches.get_state() if hasattr(task.train_batches, 'get_state') else {}
  # Round-trip through JSON so the saved iterator state is plain data.
  data_state = json.loads(json.dumps(data_state, default=_json_default))
  export = jax.jit(task.export)(state)
  checkpointer.save(step, state=state, data_state=data_state, export=export,
                    meta=dict(task.meta, step=step, identity=dict(identity)), force=force)


def _json_default(o: Any) -> Any:
  if isinstance(o, (np.integer,)):
    return int(o)
  if isinstance(o, bytes):
    return o.decode('latin-1')
  return str(o)
