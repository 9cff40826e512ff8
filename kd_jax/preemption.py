"""Preemption: SIGTERM/SIGINT become "save at this step and exit", on every process at the same step.

Schedulers (TPU pods, preemptible GPU hosts, SLURM, Kubernetes) send SIGTERM and allow a few seconds.
The loop asks `Preemption.reached(step)` after every step and, when it says yes, saves a checkpoint at
that step and raises `errors.Preempted` (launch.py exits with 128 + the signal number).

One process: a Python handler sets a flag; the check is a plain attribute read, so it costs nothing
per step. Several processes (`jax.distributed`): JAX's preemption sync manager already catches
SIGTERM (in C++) and agrees on one step for all processes — the step after the largest step any
process has reached when the notice arrives — so every host saves the same step;
`multihost_utils.reached_preemption_sync_point` is that check. A Python SIGTERM handler would replace
JAX's, so only SIGINT gets one there, and it forwards itself as SIGTERM to enter the same protocol.

A second Ctrl-C (SIGINT) restores the default action: a user pressing it twice gets an immediate
exit (resume then falls back to the last complete checkpoint). Repeated SIGTERMs are ignored: a
wrapper (`timeout`, a shell, a launcher) often forwards the scheduler's signal to the whole process
group, and the save must not be cut short by the copy; the scheduler's SIGKILL ends it if it must.
"""
from __future__ import annotations

import os
import signal
import types
from typing import Any

import jax
from jax.experimental import multihost_utils

HANDLED = (signal.SIGTERM, signal.SIGINT)


class Preemption:
  """Context manager that turns SIGTERM/SIGINT into a request to checkpoint and stop.

  Usage:
    with Preemption() as preemption:
      for step in ...:
        ...
        if preemption.reached(step): save(step); raise errors.Preempted(...)
  """

  def __init__(self) -> None:
    self.signum: int | None = None
    self._previous: dict[int, Any] = {}
    self._multi = False

  def __enter__(self) -> 'Preemption':
    # Several processes means `jax.distributed` is initialised, with its preemption sync manager.
    self._multi = jax.process_count() > 1
    handled = (signal.SIGINT,) if self._multi else HANDLED
    for sig in handled:
      try:
        self._previous[sig] = signal.signal(sig, self._handle)
      except ValueError:  # not the main thread (e.g. a notebook worker thread): leave signals alone
        break
    return self

  def __exit__(self, *exc: Any) -> None:
    for sig, previous in self._previous.items():
      signal.signal(sig, previous)
    self._previous.clear()

  def _handle(self, signum: int, frame: types.FrameType | None) -> None:
    del frame
    if self.signum is not None:
      if signum == signal.SIGINT:
        # Second Ctrl-C: do what it would have done without us.
        signal.signal(signum, signal.default_int_handler)
        raise KeyboardInterrupt
      return
    self.signum = signum
    if self._multi:
      # Enter JAX's preemption protocol (its notifier listens for SIGTERM).
      os.kill(os.getpid(), signal.SIGTERM)

  def reached(self, step: int) -> bool:
    """Whether this step is the one to save and stop at (the same step on every process).

    Must be called after every step on every process when running distributed (JAX's protocol
    counts the steps).
    """
    if self._multi:
      if multihost_utils.reached_preemption_sync_point(step):
        self.signum = self.signum or signal.SIGTERM
        return True
      return False
    return self.signum is not None
