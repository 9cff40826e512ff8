"""Fault injection for two trainers: SIGKILL/SIGTERM resumes, a forced NaN, damaged checkpoints.

  python benchmarks/fault_injection.py            # both trainers, full counts (≈ 10-15 min, 2 cores)
  python benchmarks/fault_injection.py --quick    # fewer kills and SIGTERM repeats
  python benchmarks/fault_injection.py --trainers kd --keep   # one trainer, keep the temp dirs

Trainers: `kd` (classifier KD, configs/fashion_mnist/kd_student.py:tiny, from a tiny ResNet-20
teacher) and `distill` (generator distillation, configs/fashion_mnist/distill_l1.py:tiny, from a
tiny GAN teacher). Everything runs on a tiny Fashion-MNIST (tests/conftest.py's `make_tiny_idx` +
kd_jax's offline builder) through `launch.py` subprocesses, every one with a timeout. Each measured
run trains TOTAL_STEPS steps, prints every step (log_every=1) and checkpoints every
CHECKPOINT_EVERY steps (keep 3). Per trainer, in this order:

1. reference: one uninterrupted run; its final export is what the other runs must reproduce.
2. SIGKILL: a fresh workdir; each launch is SIGKILLed (its whole process group) at a random moment,
   then the same command is relaunched, until `--kills` kills were delivered; then it runs to the
   end. A kill counts as delivered only if the launch had already printed its first
   `[kd_jax] step` line (JAX start-up, restore and compilation are over) and the process was still
   alive when the signal arrived (its exit status is -9). The delay after that first line is
   u · 2·(steps left)/((kills left + 1) · step rate), u ~ U(0, 1) from a seeded RNG, so the kills
   spread over the run; with a checkpoint every few steps, some land during checkpoint writes
   (counted: an orbax `*.orbax-checkpoint-tmp*` dir left in checkpoints/). The final export must
   equal the reference bitwise (every leaf's dtype, shape and bytes, and the step).
3. SIGTERM: a fresh workdir; `--repeats` times: launch, wait until the progress passes a random
   step, send SIGTERM to the process, record its exit status and the time it took to exit, and
   relaunch, reading `[kd_jax] resuming <workdir> from step S`. Steps lost = the last step the
   terminated process printed − S (goal 0; a process that keeps stepping after the signal only
   makes this larger, so it is never flattered by the reading thread's lag). Then the run finishes
   and its export is compared with the reference. Contract: exit 143 after saving a checkpoint at
   the current step and printing `[kd_jax] preempted (SIGTERM) at step N: ...`.
4. forced NaN: learning_rate=1e30 (Adam steps of that size overflow the weights by step 2 on both
   tiny runs), a checkpoint every step, all kept; afterwards every step on disk is restored as numpy
   (`state` and `export` items) and all float leaves checked finite. Contract: exit 3 with one
   `kd_jax: error: ...non-finite...` line on stderr, no non-finite checkpoint.
5. damaged newest checkpoint: copies of the reference workdir with the newest step damaged in one
   of DAMAGES' ways, each relaunched with total_steps + 10. Figures: the resume step (want the next
   older step), exit 0, whether a message named the damaged step, and whether the damaged step's
   files still exist under the workdir (moved aside, e.g. to checkpoints_damaged/, or left in place
   unchanged: never written again). Contract: moved aside, resumed from the next older step.

All child processes share a persistent JAX compilation cache under the temp root (the reference run
fills it), which halves each relaunch's start-up on 2 CPU cores; `--no-compile-cache` turns it off.
The two trainers run side by side (`--jobs 1`: one after the other). The table at the end has one
row per trainer × figure and whether the goal is met.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent import futures
from typing import Any, Callable, Iterable

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

TOTAL_STEPS = 100
CHECKPOINT_EVERY = 5
KEEP_CHECKPOINTS = 3
EXTRA_STEPS = 10          # the damaged-checkpoint relaunch trains this many more steps
NAN_STEPS = 20
NAN_LEARNING_RATE = '1e30'
STARTUP_TIMEOUT_S = 240   # launch → first progress line (compilation on a busy 2-core machine)
RUN_TIMEOUT_S = 420       # launch → exit
EXIT_TIMEOUT_S = 60       # SIGTERM → exit
SIGTERM_MIN_STEPS, SIGTERM_MAX_STEPS = 3, 9   # steps a SIGTERMed launch makes before the signal
MAX_FAILED_LAUNCHES = 3   # unexpected non-zero exits before a measure gives up

STEP_RE = re.compile(r'^\[kd_jax\] step (\d+)/(\d+)')
RESUME_RE = re.compile(r'^\[kd_jax\] resuming .* from step (\d+)')
PREEMPT_RE = re.compile(r'^\[kd_jax\] preempted \((\w+)\) at step (\d+)')
ORBAX_TMP = '.orbax-checkpoint-tmp'

LEGEND = (
    '\nSIGKILL: a kill counts if the launch had printed its first progress line and was still alive\n'
    '  (exit -9); "unfinished checkpoint write": the kill left a new orbax tmp step dir. The delays\n'
    '  after that first line are random (seeded).\n'
    f'SIGTERM: sent {SIGTERM_MIN_STEPS}-{SIGTERM_MAX_STEPS} (random) steps after the launch started;\n'
    '  steps lost = last step the process printed - the step its relaunch resumed from.\n'
    f'NaN: learning_rate={NAN_LEARNING_RATE}, a checkpoint every step; every step on disk restored\n'
    '  (state and export items, as numpy) and checked finite.\n'
    f'Damaged: a copy of the reference workdir, newest step damaged, relaunched with total_steps +\n'
    f'  {EXTRA_STEPS}; "files kept": the damaged step\'s files, byte for byte, still under the workdir.\n')

_PRINT_LOCK = threading.Lock()
_ORBAX_LOCK = threading.Lock()   # in-process checkpoint reads, one at a time


def log(tag: str, message: str) -> None:
  with _PRINT_LOCK:
    print(f'[faults {tag}] {message}', flush=True)


# --------------------------------------------------------------------------------------------------
# Trainers and their tiny set-up


@dataclasses.dataclass(frozen=True)
class Trainer:
  """A measured trainer: its config, its teacher's config and the flags tying them together."""
  name: str
  config: str
  teacher_config: str
  teacher_flags: tuple[str, ...]      # flags of the teacher run (besides data_dir)
  student_flags: tuple[str, ...]      # flags of every measured run; {teacher} = teacher workdir


TRAINERS = {
    'kd': Trainer('kd', 'configs/fashion_mnist/kd_student.py:tiny',
                  'configs/fashion_mnist/teacher.py:tiny', (),
                  ('--config.teacher.checkpoint={teacher}',)),
    # No classifier for FID/KID: the distillation's final evaluation stays cheap (PSNR vs teacher).
    'distill': Trainer('distill', 'configs/fashion_mnist/distill_l1.py:tiny',
                       'configs/fashion_mnist/gan_teacher.py:tiny',
                       ('--config.eval.classifier_checkpoint=',),
                       ('--config.teacher.checkpoint={teacher}',
                        '--config.eval.classifier_checkpoint=')),
}


@dataclasses.dataclass
class Env:
  """Where this invocation's files live and how child processes are started."""
  root: str
  data_dir: str
  env: dict[str, str]
  _counter: int = 0
  _lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)

  def workdir(self, name: str) -> str:
    return os.path.join(self.root, name)

  def log_path(self, name: str) -> str:
    with self._lock:
      self._counter += 1
      n = self._counter
    os.makedirs(os.path.join(self.root, 'logs'), exist_ok=True)
    return os.path.join(self.root, 'logs', f'{n:03d}_{name}.log')


def child_env(root: str, compile_cache: bool) -> dict[str, str]:
  """The parent's environment, quiet, without a preallocating client, with the shared cache."""
  env = dict(os.environ)
  env.update(TF_CPP_MIN_LOG_LEVEL='2', XLA_PYTHON_CLIENT_PREALLOCATE='false',
             PYTHONPATH=os.pathsep.join(p for p in (REPO, env.get('PYTHONPATH', '')) if p))
  if compile_cache:
    env.update(JAX_COMPILATION_CACHE_DIR=os.path.join(root, 'jax_cache'),
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0')
  return env


def build_tiny_data(root: str) -> str:
  """A TFDS data dir with the tiny Fashion-MNIST the tests use; returns its path."""
  data_dir = os.path.join(root, 'data')
  if os.path.isdir(os.path.join(data_dir, 'fashion_mnist')):
    return data_dir
  sys.path.insert(0, os.path.join(REPO, 'tests'))
  saved = os.environ.get('XLA_FLAGS')
  import conftest  # pylint: disable=import-outside-toplevel  # sets XLA_FLAGS for the tests
  if saved is None:
    os.environ.pop('XLA_FLAGS', None)
  else:
    os.environ['XLA_FLAGS'] = saved
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  from kd_jax.data import fashion_mnist  # pylint: disable=import-outside-toplevel
  tfds.disable_progress_bar()
  idx = conftest.make_tiny_idx(os.path.join(root, 'idx'))
  fashion_mnist.build(data_dir, idx)
  return data_dir


def train_teacher(env: Env, trainer: Trainer) -> str:
  """Trains the trainer's tiny teacher once (kept across `--root` reuses); returns its workdir."""
  workdir = env.workdir(f'{trainer.name}_teacher')
  if os.path.exists(os.path.join(workdir, 'summary.json')):
    return workdir
  launch = Launch(env, f'{trainer.name}_teacher',
                  [trainer.teacher_config, workdir, *trainer.teacher_flags])
  rc = launch.finish(RUN_TIMEOUT_S)
  if rc != 0:
    raise RuntimeError(f'{trainer.name} teacher run failed (exit {rc}): {launch.tail()}')
  return workdir


def run_args(trainer: Trainer, teacher: str, workdir: str, **overrides: Any) -> list[str]:
  """launch.py arguments of a measured run: config, workdir, then --config.<field> flags."""
  fields = dict(total_steps=TOTAL_STEPS, log_every=1, eval_every=0,
                checkpoint_every=CHECKPOINT_EVERY, keep_checkpoints=KEEP_CHECKPOINTS)
  fields.update(overrides)
  flags = [f.format(teacher=teacher) for f in trainer.student_flags]
  flags += [f'--config.{k}={v}' for k, v in fields.items()]
  return [trainer.config, workdir, *flags]


# --------------------------------------------------------------------------------------------------
# One launch.py process, read line by line


_LIVE: set['Launch'] = set()


class Launch:
  """A `launch.py` subprocess in its own process group; two threads read stdout and stderr.

  Every line is kept with its arrival time and written to a log file. All waits take a timeout.
  """

  def __init__(self, env: Env, name: str, args: list[str]):
    config, workdir, *flags = args
    cmd = [sys.executable, os.path.join(REPO, 'launch.py'), '--config', config,
           '--workdir', workdir, f'--config.data.data_dir={env.data_dir}', *flags]
    self.workdir = workdir
    self.lines: list[tuple[float, str, str]] = []   # (time, 'out' | 'err', line)
    self._cond = threading.Condition()
    self._open = 2
    self._log = open(env.log_path(name), 'w', encoding='utf-8')
    self._log.write(' '.join(cmd) + '\n')
    self.started = time.perf_counter()
    self.proc = subprocess.Popen(cmd, cwd=REPO, env=env.env, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True, errors='replace',
                                 start_new_session=True)
    _LIVE.add(self)
    self._readers = [threading.Thread(target=self._read, args=(s, tag), daemon=True)
                     for s, tag in ((self.proc.stdout, 'out'), (self.proc.stderr, 'err'))]
    for t in self._readers:
      t.start()

  def _read(self, stream: Any, tag: str) -> None:
    for raw in stream:
      line = raw.rstrip('\n')
      with self._cond:
        self.lines.append((time.perf_counter(), tag, line))
        self._log.write(f'{tag}: {line}\n')
        self._cond.notify_all()
    with self._cond:
      self._open -= 1
      self._cond.notify_all()

  # -- what it printed

  def out(self) -> list[str]:
    with self._cond:
      return [l for _, tag, l in self.lines if tag == 'out']

  def err(self) -> list[str]:
    with self._cond:
      return [l for _, tag, l in self.lines if tag == 'err']

  def steps(self) -> list[tuple[float, int]]:
    """(arrival time, step) of every progress line so far."""
    with self._cond:
      return [(t, int(m.group(1))) for t, tag, l in self.lines
              if tag == 'out' and (m := STEP_RE.match(l))]

  def last_step(self) -> int | None:
    steps = self.steps()
    return steps[-1][1] if steps else None

  def resume_step(self) -> int | None:
    return next((int(m.group(1)) for l in self.out() if (m := RESUME_RE.match(l))), None)

  def why(self) -> str:
    """The launch's own error line, else the last stderr line that is not an absl warning."""
    err = [l for l in self.err() if l.strip() and not re.match(r'^[IW]\d{4} ', l)]
    own = [l for l in err if l.startswith('kd_jax: error:')]
    line = (own or err or ['no stderr'])[-1]
    return line if len(line) <= 160 else line[:157] + '...'

  def tail(self, n: int = 3) -> str:
    with self._cond:
      return ' | '.join(l for _, _, l in self.lines[-n:])

  # -- waiting

  def wait_until(self, predicate: Callable[[], Any], timeout: float) -> Any:
    """`predicate()`'s first value that is not None; None when the output ends or `timeout` passes."""
    deadline = time.perf_counter() + timeout
    with self._cond:
      while True:
        value = predicate()
        if value is not None or self._open == 0:
          return value
        left = deadline - time.perf_counter()
        if left <= 0:
          return None
        self._cond.wait(min(left, 0.5))

  def wait_for_step(self, at_least: int, timeout: float = STARTUP_TIMEOUT_S) -> int | None:
    """The first printed step ≥ `at_least`, or None if the output ended or timed out first."""
    return self.wait_until(
        lambda: next((s for _, s in self.steps() if s >= at_least), None), timeout)

  def wait_start(self, timeout: float = STARTUP_TIMEOUT_S) -> int | None:
    """The step this launch starts from: its resume line's step, 0 if it printed a progress line
    without one, None if neither appeared."""
    def started() -> int | None:
      resume = self.resume_step()
      if resume is not None:
        return resume
      return 0 if self.steps() else None
    return self.wait_until(started, timeout)

  def alive(self) -> bool:
    return self.proc.poll() is None

  def send(self, sig: int, group: bool = False) -> None:
    """Sends `sig` to the process (or its whole group); a process that already exited is fine."""
    try:
      if group:
        os.killpg(self.proc.pid, sig)
      else:
        self.proc.send_signal(sig)
    except (ProcessLookupError, PermissionError):
      pass

  def finish(self, timeout: float = RUN_TIMEOUT_S) -> int | None:
    """Waits for the exit; returns the exit status, or None after a timeout (then SIGKILLs it)."""
    try:
      rc: int | None = self.proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
      self.send(signal.SIGKILL, group=True)
      self.proc.wait()
      rc = None
    for t in self._readers:
      t.join(timeout=10)
    with self._cond:
      self._log.write(f'exit status: {rc}\n')
      self._log.close()
    _LIVE.discard(self)
    return rc

  def sleep_while_alive(self, seconds: float) -> bool:
    """Sleeps up to `seconds`; False when the process exited before that."""
    try:
      self.proc.wait(timeout=max(seconds, 0.0))
      return False
    except subprocess.TimeoutExpired:
      return True


def kill_all_children() -> None:
  for launch in list(_LIVE):
    launch.send(signal.SIGKILL, group=True)


# --------------------------------------------------------------------------------------------------
# Checkpoint inspection (in this process)


def _flat(tree: Any) -> dict[str, np.ndarray]:
  import jax  # pylint: disable=import-outside-toplevel
  return {jax.tree_util.keystr(k): np.asarray(v)
          for k, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


def export_of(workdir: str) -> tuple[int, dict[str, np.ndarray]]:
  """(step, flat export leaves) of the workdir's newest checkpoint."""
  from kd_jax import checkpoint as ckpt_lib  # pylint: disable=import-outside-toplevel
  with _ORBAX_LOCK:
    _, step = ckpt_lib.find_checkpoint(workdir, 'workdir')
    return step, _flat(ckpt_lib.load_export_numpy(workdir))


def bitwise_equal(workdir: str, reference: tuple[int, dict[str, np.ndarray]]) -> tuple[bool, str]:
  """Whether the workdir's export equals the reference's: step, leaf names, dtypes, shapes, bytes."""
  try:
    step, leaves = export_of(workdir)
  except Exception as e:  # pylint: disable=broad-except
    return False, f'no export ({type(e).__name__}: {str(e)[:120]})'
  ref_step, ref = reference
  if step != ref_step:
    return False, f'step {step} vs reference {ref_step}'
  if set(leaves) != set(ref):
    return False, f'leaves differ: {sorted(set(leaves) ^ set(ref))[:3]}'
  differ = [k for k in ref if not (leaves[k].dtype == ref[k].dtype and leaves[k].shape == ref[k].shape
                                   and np.array_equal(leaves[k], ref[k])
                                   and leaves[k].tobytes() == ref[k].tobytes())]
  if differ:
    worst = max(differ, key=lambda k: float(np.max(np.abs(leaves[k].astype(np.float64)
                                                          - ref[k].astype(np.float64)))))
    return False, f'{len(differ)}/{len(ref)} leaves differ, e.g. {worst}'
  return True, f'step {step}, {len(ref)} leaves'


def step_dirs(workdir: str) -> list[int]:
  """Finished checkpoint steps in `<workdir>/checkpoints/` (names that are integers), ascending."""
  directory = os.path.join(workdir, 'checkpoints')
  if not os.path.isdir(directory):
    return []
  return sorted(int(n) for n in os.listdir(directory) if n.isdigit())


def unfinished_writes(workdir: str) -> list[str]:
  """Orbax temporary step dirs: a checkpoint write that did not finish."""
  directory = os.path.join(workdir, 'checkpoints')
  return [n for n in os.listdir(directory) if ORBAX_TMP in n] if os.path.isdir(directory) else []


def item_finite(item_dir: str) -> bool:
  """Whether every float leaf of one orbax PyTree item (restored as numpy) is finite."""
  import jax  # pylint: disable=import-outside-toplevel
  from kd_jax import checkpoint as ckpt_lib  # pylint: disable=import-outside-toplevel
  with _ORBAX_LOCK:
    restored = ckpt_lib.load_item_numpy(item_dir)
  floats = [np.asarray(x) for x in jax.tree.leaves(restored)]
  return all(np.isfinite(x).all() for x in floats if np.issubdtype(x.dtype, np.floating))


def checkpoint_finite(workdir: str, step: int) -> bool | None:
  """Whether the step's `state` and `export` items hold only finite floats; None if unreadable."""
  step_dir = os.path.join(workdir, 'checkpoints', str(step))
  try:
    return all(item_finite(os.path.join(step_dir, item)) for item in ('state', 'export'))
  except Exception:  # pylint: disable=broad-except
    return None


# --------------------------------------------------------------------------------------------------
# Results


@dataclasses.dataclass
class Row:
  trainer: str
  measure: str
  figure: str
  ok: bool | None    # goal met; None: no goal (a plain count)


def yes_no(flag: bool | None) -> str:
  return {True: 'yes', False: 'no', None: '?'}[flag]


def status_text(rc: int | None) -> str:
  if rc is None:
    return 'timeout'
  if rc < 0:
    return f'{rc} ({signal.Signals(-rc).name})'
  return str(rc)


def step_rate(launch: Launch) -> float:
  """Steps per second between the second and the last progress line (compilation excluded)."""
  steps = launch.steps()
  if len(steps) < 3:
    return 10.0
  (t0, s0), (t1, s1) = steps[1], steps[-1]
  return max((s1 - s0) / max(t1 - t0, 1e-3), 1.0)


# --------------------------------------------------------------------------------------------------
# The measures


@dataclasses.dataclass
class Context:
  """What every measure of one trainer needs."""
  env: Env
  trainer: Trainer
  teacher: str
  rng: random.Random
  reference_dir: str = ''
  reference: tuple[int, dict[str, np.ndarray]] | None = None
  rate: float = 10.0

  def args(self, workdir: str, **overrides: Any) -> list[str]:
    return run_args(self.trainer, self.teacher, workdir, **overrides)

  def launch(self, name: str, workdir: str, **overrides: Any) -> Launch:
    return Launch(self.env, f'{self.trainer.name}_{name}', self.args(workdir, **overrides))

  def log(self, message: str) -> None:
    log(self.trainer.name, message)


def measure_reference(ctx: Context) -> list[Row]:
  """One uninterrupted run: the export the interrupted runs must reproduce, and the step rate."""
  ctx.reference_dir = ctx.env.workdir(f'{ctx.trainer.name}_reference')
  t0 = time.perf_counter()
  launch = ctx.launch('reference', ctx.reference_dir)
  rc = launch.finish()
  if rc != 0:
    raise RuntimeError(f'{ctx.trainer.name} reference run failed (exit {status_text(rc)}): '
                       f'{launch.tail()}')
  ctx.reference = export_of(ctx.reference_dir)
  ctx.rate = step_rate(launch)
  ctx.log(f'reference: {time.perf_counter() - t0:.0f} s, {ctx.rate:.1f} step/s, '
          f'checkpoints {step_dirs(ctx.reference_dir)}')
  return [Row(ctx.trainer.name, 'reference run', f'exit 0, {TOTAL_STEPS} steps, '
              f'{time.perf_counter() - t0:.0f} s, {ctx.rate:.0f} step/s', None)]


def measure_sigkill(ctx: Context, kills_wanted: int) -> list[Row]:
  """SIGKILL at random moments, relaunching the same command, then a bitwise check."""
  workdir = ctx.env.workdir(f'{ctx.trainer.name}_sigkill')
  kills = during_write = launches = failures = 0
  final_rc: int | None = None
  while launches < 3 * kills_wanted + MAX_FAILED_LAUNCHES + 2:
    before = set(unfinished_writes(workdir))
    launch = ctx.launch(f'sigkill{launches}', workdir)
    launches += 1
    start = launch.wait_start()
    if kills < kills_wanted and start is not None and launch.wait_for_step(start + 1):
      left = max(TOTAL_STEPS - start, 1)
      delay = ctx.rng.random() * 2 * left / ((kills_wanted - kills + 1) * ctx.rate)
      if launch.sleep_while_alive(delay):
        launch.send(signal.SIGKILL, group=True)
        final_rc = launch.finish()
        if final_rc == -signal.SIGKILL:
          kills += 1
          torn = set(unfinished_writes(workdir)) - before
          during_write += bool(torn)
          ctx.log(f'SIGKILL {kills}/{kills_wanted}: started at step {start}, killed after '
                  f'{delay:.2f} s at step {launch.last_step()}'
                  f'{", during a checkpoint write" if torn else ""}')
          continue
      else:
        final_rc = launch.finish()
    else:
      final_rc = launch.finish()
    if final_rc == 0:
      break
    failures += 1
    ctx.log(f'SIGKILL relaunch {launches} exited {status_text(final_rc)}: {launch.why()}')
    if failures >= MAX_FAILED_LAUNCHES:
      break
  equal, detail = (bitwise_equal(workdir, ctx.reference) if final_rc == 0
                   else (False, f'not finished: {launch.why()}'))
  ctx.log(f'SIGKILL: {kills} kills, {launches - 1} relaunches, final exit {status_text(final_rc)}, '
          f'bitwise equal: {yes_no(equal)} ({detail})')
  name = ctx.trainer.name
  return [
      Row(name, 'SIGKILL: kills delivered', f'{kills} ({during_write} left an unfinished '
          'checkpoint write)', kills >= kills_wanted),
      Row(name, 'SIGKILL: relaunches / final exit', f'{launches - 1} / {status_text(final_rc)}',
          final_rc == 0),
      Row(name, 'SIGKILL: final export bitwise = reference', f'{yes_no(equal)} ({detail})', equal),
  ]


@dataclasses.dataclass
class TermResult:
  rc: int | None
  exit_s: float
  at_signal: int
  last_printed: int
  preempt_line: bool
  resumed_from: int | None = None

  @property
  def lost(self) -> int | None:
    return None if self.resumed_from is None else self.last_printed - self.resumed_from


def measure_sigterm(ctx: Context, repeats: int) -> list[Row]:
  """SIGTERM after a random number of steps, `repeats` times, then resume to the end."""
  workdir = ctx.env.workdir(f'{ctx.trainer.name}_sigterm')
  results: list[TermResult] = []
  final_rc: int | None = None
  for i in range(repeats + 1):
    launch = ctx.launch(f'sigterm{i}', workdir)
    start = launch.wait_start()
    if results and results[-1].resumed_from is None:
      results[-1].resumed_from = start
    if i == repeats or start is None:
      final_rc = launch.finish()
      break
    target = start + ctx.rng.randint(SIGTERM_MIN_STEPS, SIGTERM_MAX_STEPS)
    if launch.wait_for_step(target) is None or not launch.alive():
      final_rc = launch.finish()
      ctx.log(f'SIGTERM {i + 1}: the launch ended before step {target} '
              f'(exit {status_text(final_rc)})')
      break
    at_signal = launch.last_step() or 0
    t0 = time.perf_counter()
    launch.send(signal.SIGTERM)
    rc = launch.finish(EXIT_TIMEOUT_S)
    result = TermResult(rc, time.perf_counter() - t0, at_signal, launch.last_step() or 0,
                        any(PREEMPT_RE.match(l) for l in launch.out()))
    results.append(result)
    ctx.log(f'SIGTERM {i + 1}/{repeats}: sent at step {at_signal}, exit {status_text(rc)} after '
            f'{result.exit_s:.2f} s, last step printed {result.last_printed}, preempted line: '
            f'{yes_no(result.preempt_line)}')
  equal, detail = (bitwise_equal(workdir, ctx.reference) if final_rc == 0
                   else (False, f'not finished: {launch.why()}'))
  ctx.log(f'SIGTERM: resumed from {[r.resumed_from for r in results]}, steps lost '
          f'{[r.lost for r in results]}, bitwise equal: {yes_no(equal)} ({detail})')
  name = ctx.trainer.name
  codes = ', '.join(status_text(r.rc) for r in results) or 'none'
  lost = [r.lost for r in results]
  return [
      Row(name, 'SIGTERM: exit status (want 143)', codes,
          bool(results) and all(r.rc == 128 + signal.SIGTERM for r in results)),
      Row(name, 'SIGTERM: seconds to exit', ', '.join(f'{r.exit_s:.2f}' for r in results) or '-',
          None),
      Row(name, 'SIGTERM: steps lost (want 0)',
          ', '.join('?' if v is None else str(v) for v in lost) or '-',
          bool(results) and len(results) >= repeats and all(v == 0 for v in lost)),
      Row(name, 'SIGTERM: preempted line printed', f'{sum(r.preempt_line for r in results)}'
          f'/{len(results)}', bool(results) and all(r.preempt_line for r in results)),
      Row(name, 'SIGTERM: final export bitwise = reference',
          f'{yes_no(equal)} ({detail}; final exit {status_text(final_rc)})', equal),
  ]


def measure_nan(ctx: Context) -> list[Row]:
  """A diverging run (learning rate 1e30), then every checkpoint on disk checked finite."""
  workdir = ctx.env.workdir(f'{ctx.trainer.name}_nan')
  launch = ctx.launch('nan', workdir, total_steps=NAN_STEPS, checkpoint_every=1,
                      keep_checkpoints=NAN_STEPS + 1, **{'optimizer.learning_rate': NAN_LEARNING_RATE})
  rc = launch.finish()
  errors = [l for l in launch.err() if l.startswith('kd_jax: error:')]
  traceback = any(l.startswith('Traceback') for l in launch.err())
  steps = step_dirs(workdir)
  finite = {s: checkpoint_finite(workdir, s) for s in steps}
  bad = [s for s, f in finite.items() if f is not True]
  newest = finite[steps[-1]] if steps else None
  one_line = len(errors) == 1 and 'non-finite' in errors[0] and not traceback
  ctx.log(f'NaN: exit {status_text(rc)}, last step printed {launch.last_step()}, error lines '
          f'{errors[:1]}, traceback: {yes_no(traceback)}, checkpoints {steps}, not finite {bad}')
  name = ctx.trainer.name
  return [
      Row(name, 'NaN: exit status (want 3)', f'{status_text(rc)} (last step printed '
          f'{launch.last_step()}; {launch.why()})', rc == 3),
      Row(name, 'NaN: one "kd_jax: error: ...non-finite..." line',
          f'{yes_no(one_line)} ({len(errors)} error line(s), traceback: {yes_no(traceback)})',
          one_line),
      Row(name, 'NaN: newest checkpoint finite', f'{yes_no(newest)} (step '
          f'{steps[-1] if steps else "-"})', newest is True),
      Row(name, 'NaN: non-finite/unreadable checkpoints on disk (want 0)',
          f'{len(bad)} of {len(steps)}', not bad and bool(steps)),
  ]


# -- damaged newest checkpoint


def _files(root: str) -> list[str]:
  return sorted(os.path.relpath(os.path.join(d, f), root)
                for d, _, names in os.walk(root) for f in names)


def _data_files(item_dir: str) -> list[str]:
  """The array data files of an OCDBT item (files under its `d/` dirs), largest first."""
  paths = [os.path.join(item_dir, p) for p in _files(item_dir) if '/d/' in f'/{p}']
  return sorted(paths, key=os.path.getsize, reverse=True)


def _truncate_half(paths: Iterable[str]) -> None:
  for p in paths:
    os.truncate(p, os.path.getsize(p) // 2)


def damage_truncate_arrays(step_dir: str) -> None:
  _truncate_half(_data_files(os.path.join(step_dir, 'state'))[:2])


def damage_empty_manifest(step_dir: str) -> None:
  for p in _files(os.path.join(step_dir, 'state')):
    if os.path.basename(p) == 'manifest.ocdbt':
      os.truncate(os.path.join(step_dir, 'state', p), 0)


def damage_delete_metadata(step_dir: str) -> None:
  os.remove(os.path.join(step_dir, 'state', '_METADATA'))


def damage_empty_step_dir(step_dir: str) -> None:
  for name in os.listdir(step_dir):
    path = os.path.join(step_dir, name)
    shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)


def damage_truncate_export(step_dir: str) -> None:
  _truncate_half(_data_files(os.path.join(step_dir, 'export'))[:1])


DAMAGES: dict[str, tuple[str, Callable[[str], None]]] = {
    'truncate_arrays': ('state array files truncated to half (2 largest)', damage_truncate_arrays),
    'empty_manifest': ('state manifest.ocdbt files emptied', damage_empty_manifest),
    'no_metadata': ('state/_METADATA deleted', damage_delete_metadata),
    'empty_step': ('step dir emptied', damage_empty_step_dir),
    'truncate_export': ('largest export array file truncated to half', damage_truncate_export),
}


def _digest(path: str) -> str:
  with open(path, 'rb') as f:
    return hashlib.sha256(f.read()).hexdigest()


def _snapshot(step_dir: str) -> dict[str, str]:
  """{path relative to the step dir: sha256} of every file in it."""
  return {p: _digest(os.path.join(step_dir, p)) for p in _files(step_dir)}


def _kept(workdir: str, step: int, snapshot: dict[str, str]) -> bool:
  """Whether the damaged step survives under the workdir: a dir named after the step, outside
  checkpoints/<step>, holding every file of `snapshot` with the same content; or checkpoints/<step>
  itself, unchanged (the same files, the same content: not written again)."""
  live = os.path.join(workdir, 'checkpoints', str(step))
  if os.path.isdir(live) and _snapshot(live) == snapshot:
    return True
  candidates = [os.path.join(d, n) for d, names, _ in os.walk(workdir) for n in names
                if re.fullmatch(rf'{step}([._-].*)?', n) and os.path.join(d, n) != live]
  return any(all(os.path.isfile(os.path.join(c, p)) and _digest(os.path.join(c, p)) == h
                 for p, h in snapshot.items()) for c in candidates)


def measure_damage(ctx: Context, kind: str) -> list[Row]:
  """Copy of the reference workdir, newest step damaged one way, relaunched for EXTRA_STEPS more."""
  what, damage = DAMAGES[kind]
  workdir = ctx.env.workdir(f'{ctx.trainer.name}_damage_{kind}')
  shutil.copytree(ctx.reference_dir, workdir)
  steps = step_dirs(workdir)
  newest, previous = steps[-1], steps[-2]
  step_dir = os.path.join(workdir, 'checkpoints', str(newest))
  damage(step_dir)
  snapshot = _snapshot(step_dir)
  launch = ctx.launch(f'damage_{kind}', workdir, total_steps=TOTAL_STEPS + EXTRA_STEPS)
  rc = launch.finish()
  resumed = launch.resume_step()
  named = [l for _, _, l in launch.lines if 'damaged' in l.lower() and str(newest) in l]
  kept = _kept(workdir, newest, snapshot)
  aside = os.path.isdir(os.path.join(workdir, 'checkpoints_damaged'))
  ctx.log(f'damage {kind}: exit {status_text(rc)}, resumed from {resumed} (want {previous}), '
          f'message: {named[:1] or "none"}, kept: {yes_no(kept)}'
          + ('' if rc == 0 else f'; {launch.why()}'))
  ok = rc == 0 and resumed == previous and kept
  figure = (f'resumed from {resumed} (want {previous}), exit {status_text(rc)}, message naming '
            f'step {newest}: {yes_no(bool(named))}, moved aside: {yes_no(aside)}, files kept: '
            f'{yes_no(kept)}' + ('' if rc == 0 else f' ({launch.why()})'))
  return [Row(ctx.trainer.name, f'damaged newest: {what}', figure, ok)]


# --------------------------------------------------------------------------------------------------
# Driver


def run_trainer(env: Env, trainer: Trainer, args: argparse.Namespace) -> list[Row]:
  """Every measure of one trainer; a measure that raises becomes a failed row."""
  rng = random.Random(f'{args.seed}-{trainer.name}')
  t0 = time.perf_counter()
  teacher = train_teacher(env, trainer)
  log(trainer.name, f'teacher ready ({time.perf_counter() - t0:.0f} s)')
  ctx = Context(env, trainer, teacher, rng)
  rows = measure_reference(ctx)
  measures: list[tuple[str, Callable[[], list[Row]]]] = [
      ('SIGKILL', lambda: measure_sigkill(ctx, args.kills)),
      ('SIGTERM', lambda: measure_sigterm(ctx, args.repeats)),
      ('NaN', lambda: measure_nan(ctx)),
  ] + [(f'damage {k}', (lambda k=k: measure_damage(ctx, k))) for k in DAMAGES]
  for name, measure in measures:
    try:
      rows += measure()
    except Exception as e:  # pylint: disable=broad-except
      log(trainer.name, f'{name} failed: {type(e).__name__}: {e}')
      rows.append(Row(trainer.name, name, f'error: {type(e).__name__}: {str(e)[:100]}', False))
  log(trainer.name, f'all measures done ({time.perf_counter() - t0:.0f} s)')
  return rows


def print_table(rows: list[Row]) -> None:
  if not rows:
    print('no results')
    return
  widths = [max(len(r.trainer) for r in rows), max(len(r.measure) for r in rows)]
  header = f"{'trainer':<{widths[0]}} | {'measure':<{widths[1]}} | goal | figure"
  print('\n' + header + '\n' + '-' * len(header))
  for r in rows:
    goal = {True: 'ok', False: 'FAIL', None: ''}[r.ok]
    print(f'{r.trainer:<{widths[0]}} | {r.measure:<{widths[1]}} | {goal:<4} | {r.figure}')
  print(LEGEND)
  failed = sum(r.ok is False for r in rows)
  print(f'{failed} of {sum(r.ok is not None for r in rows)} goals not met.', flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split('\n', 1)[0])
  p.add_argument('--quick', action='store_true', help='4 kills and 2 SIGTERMs per trainer')
  p.add_argument('--trainers', default='kd,distill', help=f'comma-separated, of {list(TRAINERS)}')
  p.add_argument('--kills', type=int, help='SIGKILLs per trainer (default 10, --quick 4)')
  p.add_argument('--repeats', type=int, help='SIGTERMs per trainer (default 3, --quick 2)')
  p.add_argument('--seed', type=int, default=0, help='seed of the kill delays and SIGTERM steps')
  p.add_argument('--keep', action='store_true', help='keep the temp dirs (workdirs and logs)')
  p.add_argument('--root', help='use this dir instead of a new temp dir (kept; teachers reused)')
  p.add_argument('--jobs', type=int, default=2, help='trainers measured at the same time')
  p.add_argument('--no-compile-cache', dest='compile_cache', action='store_false',
                 help='no persistent JAX compilation cache for the child processes')
  args = p.parse_args(argv)
  args.kills = args.kills if args.kills is not None else (4 if args.quick else 10)
  args.repeats = args.repeats if args.repeats is not None else (2 if args.quick else 3)
  names = [n.strip() for n in args.trainers.split(',') if n.strip()]
  unknown = [n for n in names if n not in TRAINERS]
  if unknown or not names:
    p.error(f'--trainers: unknown {unknown}; choose from {list(TRAINERS)}')
  args.trainer_list = [TRAINERS[n] for n in names]
  return args


def main(argv: list[str] | None = None) -> int:
  args = parse_args(argv)
  keep = args.keep or bool(args.root)
  root = os.path.abspath(args.root) if args.root else tempfile.mkdtemp(prefix='kd_faults_')
  os.makedirs(root, exist_ok=True)
  t0 = time.perf_counter()
  log('main', f'root {root}; trainers {[t.name for t in args.trainer_list]}, {args.kills} kills, '
      f'{args.repeats} SIGTERMs, {TOTAL_STEPS} steps, checkpoint every {CHECKPOINT_EVERY}')
  rows: list[Row] = []
  try:
    env = Env(root, build_tiny_data(root), child_env(root, args.compile_cache))
    with futures.ThreadPoolExecutor(max(1, args.jobs)) as pool:
      jobs = [pool.submit(run_trainer, env, t, args) for t in args.trainer_list]
      for trainer, job in zip(args.trainer_list, jobs):
        try:
          rows += job.result()
        except Exception as e:  # pylint: disable=broad-except
          log(trainer.name, f'failed: {type(e).__name__}: {e}')
          rows.append(Row(trainer.name, 'set-up', f'error: {type(e).__name__}: {str(e)[:160]}',
                          False))
  finally:
    kill_all_children()
    if not keep:
      shutil.rmtree(root, ignore_errors=True)
  log('main', f'{time.perf_counter() - t0:.0f} s' + (f'; files kept in {root}' if keep else ''))
  print_table(rows)
  return 0


if __name__ == '__main__':
  sys.exit(main())
