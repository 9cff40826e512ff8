"""Device mesh, shardings and multi-process helpers.

Data parallelism is `jax.jit` over a 1-D `Mesh` with a `data` axis: the batch is sharded along it and
params are replicated. This is what `pmap` did; JAX recommends jit + shardings since pmap went into
maintenance. Under jit a BatchNorm batch mean over a sharded batch is a global mean, so BN statistics
come out the same as on one device without any `axis_name` plumbing.

A teacher larger than one device's memory: `config.mesh.model = M` makes the mesh 2-D, (data,
model) = (devices / M, M). The batch is still split over every device (over both axes), and the
frozen teacher's parameters are sharded FSDP-style over `model` (`place_teacher`): each array is
cut along its largest dimension that M divides, so a device holds ≈ 1/M of the teacher and XLA's
SPMD partitioner all-gathers each layer's weights where the forward pass needs them. The student
and its optimizer state stay replicated (they are the small network).
"""
from __future__ import annotations

import contextlib
import errno
import os
import socket
import sys
import threading
from typing import Any, Iterator, Mapping

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from kd_jax import errors
from kd_jax.types import PyTree

DATA_AXIS = 'data'
MODEL_AXIS = 'model'
DEFAULT_DISTRIBUTED_TIMEOUT_S = 300
# JAX's own deadline comes this much later than ours, so that our one-line message wins.
_JAX_GRACE_S = 60


def make_mesh(devices: list[jax.Device] | None = None, model: int = 1) -> Mesh:
  """A mesh over all (or the given) devices: 1-D `data`, or with `model` > 1 the 2-D
  (`data`, `model`) = (n / model, model) mesh the teacher is sharded over.

  The 2-D layout comes from `mesh_utils.create_device_mesh`, which on TPU slices puts the `model`
  axis on neighbouring chips (the all-gathers of the sharded teacher ride the fastest links).
  """
  devices = jax.devices() if devices is None else list(devices)
  n = len(devices)
  if isinstance(model, bool) or not isinstance(model, (int, np.integer)) or model < 1:
    raise errors.ConfigError(f'config.mesh.model={model!r} must be a positive integer (the devices '
                             'one teacher is sharded over; 1: replicated).')
  if model == 1:
    return Mesh(np.asarray(devices), (DATA_AXIS,))
  if n % model:
    divisors = [d for d in range(1, n + 1) if n % d == 0]
    raise errors.ConfigError(f'config.mesh.model={model} does not divide the {n} devices; use one '
                             f'of {divisors}.')
  from jax.experimental import mesh_utils  # pylint: disable=import-outside-toplevel
  try:
    grid = mesh_utils.create_device_mesh((n // model, model), devices=devices)
  except (ValueError, AssertionError, NotImplementedError):
    grid = np.asarray(devices).reshape(n // model, model)  # no physical topology to follow
  return Mesh(grid, (DATA_AXIS, MODEL_AXIS))


def model_axis_size(mesh: Mesh) -> int:
  """How many devices share one teacher (1 on a 1-D data mesh)."""
  return int(dict(mesh.shape).get(MODEL_AXIS, 1))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split across every device (the `data` axis, and `model` on a 2-D mesh)."""
  return NamedSharding(mesh, P(tuple(mesh.axis_names) if len(mesh.axis_names) > 1 else DATA_AXIS))


def fsdp_spec(shape: tuple[int, ...], size: int) -> P:
  """`model` on the largest dimension `size` divides (the last of equals); P() when none does."""
  best = None
  for axis, dim in enumerate(shape):
    if dim % size == 0 and dim >= size and (best is None or dim >= shape[best]):
      best = axis
  if best is None:
    return P()
  return P(*([None] * best + [MODEL_AXIS]))


def teacher_shardings(tree: PyTree, mesh: Mesh) -> PyTree:
  """The `NamedSharding` of every leaf of a frozen teacher pytree on `mesh` (see `place_teacher`)."""
  size = model_axis_size(mesh)
  if size == 1:
    return jax.tree.map(lambda _: replicated(mesh), tree)
  return jax.tree.map(lambda a: NamedSharding(mesh, fsdp_spec(tuple(np.shape(a)), size)), tree)


def place_teacher(tree: PyTree, mesh: Mesh) -> PyTree:
  """Places the frozen teacher pytree: replicated on a 1-D mesh, FSDP-sharded over `model` on a
  2-D one (each process passes the same full values, as for `replicate`)."""
  return jax.tree.map(jax.device_put, tree, teacher_shardings(tree, mesh))


def per_device_bytes(tree: PyTree) -> dict[Any, int]:
  """Bytes of `tree` each device holds (from the arrays' shards; replicated leaves count fully)."""
  out: dict[Any, int] = {}
  for leaf in jax.tree.leaves(tree):
    for shard in leaf.addressable_shards:
      out[shard.device] = out.get(shard.device, 0) + shard.data.nbytes
  return out


def replicated(mesh: Mesh) -> NamedSharding:
  """Fully replicated on every device of the mesh."""
  return NamedSharding(mesh, P())


def check_global_batch(global_batch_size: int, mesh: Mesh, field: str | None = None) -> int:
  """Returns the per-process batch size; raises if the batch does not split over devices/processes.

  `field` is only kept for old callers (it prefixes the message); name the config field with
  `kd_jax.config_utils.field_context` instead.
  """
  n = mesh.devices.size
  if (isinstance(global_batch_size, (bool, np.bool_))
      or not isinstance(global_batch_size, (int, np.integer)) or global_batch_size <= 0):
    problem = (f'global batch size {global_batch_size!r} must be a positive integer; use a positive '
               f'multiple of the {n} devices of the mesh, e.g. {n * max(1, 32 // n)}.')
  elif global_batch_size % n:
    problem = (f'global batch size {global_batch_size} is not divisible by the {n} devices of the '
               f'mesh; use a multiple of {n}.')
  else:
    return global_batch_size // jax.process_count()
  raise errors.ConfigError(f'{field}: {problem}' if field else problem)


def to_global(local_batch: Mapping[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Assembles per-process numpy batches into one global batch-sharded jax.Array per key.

  Each process passes only its own slice; no host ever holds the global batch.
  """
  sharding = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
          for k, v in local_batch.items()}


def replicate(tree: PyTree, mesh: Mesh) -> PyTree:
  """Places a host/device pytree replicated on the mesh (same value in every process)."""
  sharding = replicated(mesh)
  return jax.tree.map(lambda x: jax.device_put(x, sharding), tree)


def fetch(tree: PyTree) -> Any:
  """Device → host for replicated or fully addressable values (one transfer per leaf)."""
  def _get(x):
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      # Replicated arrays: every process holds the full value in its local shards.
      return np.asarray(x.addressable_data(0))
    return np.asarray(jax.device_get(x))
  return jax.tree.map(_get, tree)


def is_chief() -> bool:
  """Only process 0 writes summaries, reports and exports."""
  return jax.process_index() == 0


def maybe_initialize_distributed(coordinator_address: str | None = None,
                                 num_processes: int | None = None,
                                 process_id: int | None = None,
                                 cpu_collectives: str | None = None,
                                 *, timeout_s: int = DEFAULT_DISTRIBUTED_TIMEOUT_S) -> bool:
  """Initialises `jax.distributed` when this is one of several processes.

  Explicit arguments win; otherwise the usual cluster environments are honoured (JAX auto-detects
  SLURM, Open MPI, TPU pods, Kubernetes via `jax.distributed.initialize()` without arguments) when
  `KD_JAX_DISTRIBUTED=1` or a known cluster variable is present. Returns whether it initialised.

  When not every process connects within `timeout_s` seconds, this process prints one line
  `kd_jax: error: ...` (the coordinator address and the process ids that are missing) and exits
  with status 2: JAX itself would abort the process with a C++ stack trace at its own deadline, and
  while it waits inside C++ no Python exception can be raised, so a watchdog thread does it.

  Raises:
    ConfigError: inconsistent flags (several processes but no coordinator or process id, a process
      id out of range, a malformed address, the coordinator's port already in use, an unknown
      --cpu_collectives).
  """
  if cpu_collectives:
    # CPU collectives across processes need an implementation (gloo works on localhost here).
    try:
      jax.config.update('jax_cpu_collectives_implementation', cpu_collectives)
    except (ValueError, TypeError) as e:
      raise errors.ConfigError(f'--cpu_collectives={cpu_collectives!r}: {e}; use e.g. '
                               "--cpu_collectives=gloo.") from None
  if isinstance(timeout_s, bool) or not isinstance(timeout_s, int) or timeout_s <= 0:
    raise errors.ConfigError(f'--distributed_timeout_s={timeout_s!r} must be a positive number of '
                             'seconds, e.g. 300.')
  if num_processes is not None and num_processes < 1:
    raise errors.ConfigError(f'--num_processes={num_processes} must be at least 1 (the number of '
                             'processes of this run).')
  if num_processes is not None and num_processes > 1:
    _check_process_flags(coordinator_address, num_processes, process_id)
    if coordinator_address and process_id == 0:
      _check_port_free(coordinator_address)
    if process_id == 0:
      missing = f'process ids other than 0 of 0..{num_processes - 1} did not connect'
    else:
      missing = (f'process 0 (which runs the coordinator) or another process id of '
                 f'0..{num_processes - 1} other than {process_id} did not connect')
    where = coordinator_address or os.environ.get('JAX_COORDINATOR_ADDRESS', '(auto-detected)')
    with _deadline(timeout_s, f'process {process_id} of {num_processes}: {missing} to the '
                   f'coordinator at {where} within {timeout_s} s; start every process with '
                   f'--num_processes={num_processes} --coordinator_address={where} and its own '
                   '--process_id (the coordinator address must be reachable from every host), or '
                   'raise --distributed_timeout_s.'):
      jax.distributed.initialize(coordinator_address=coordinator_address,
                                 num_processes=num_processes, process_id=process_id,
                                 initialization_timeout=timeout_s + _JAX_GRACE_S)
    return True
  if process_id not in (None, 0) or (coordinator_address and num_processes is None):
    raise errors.ConfigError(
        f'--process_id={process_id} / --coordinator_address={coordinator_address} given without '
        '--num_processes; pass --num_processes=<number of processes> too (or none of them for a '
        'single process).')
  if _in_cluster():
    with _deadline(timeout_s, 'not every process of the cluster job connected to the JAX '
                   f'coordinator within {timeout_s} s (JAX does not say which); check that every '
                   'task started, or raise --distributed_timeout_s.'):
      try:
        jax.distributed.initialize(initialization_timeout=timeout_s + _JAX_GRACE_S)
      except ValueError as e:  # JAX found no cluster to read the process layout from
        raise errors.ConfigError(
            f'a multi-process environment is set (KD_JAX_DISTRIBUTED, SLURM_NTASKS, '
            f'OMPI_COMM_WORLD_SIZE or JAX_COORDINATOR_ADDRESS) but JAX could not use it ({e}); '
            'pass --num_processes, --process_id and --coordinator_address.') from None
    return True
  return False


def _check_process_flags(coordinator_address: str | None, num_processes: int,
                         process_id: int | None) -> None:
  if process_id is None:
    raise errors.ConfigError(f'--num_processes={num_processes} needs --process_id (0 for the '
                             f'process that runs the coordinator, up to {num_processes - 1}).')
  if not 0 <= process_id < num_processes:
    raise errors.ConfigError(f'--process_id={process_id} must be in 0..{num_processes - 1} for '
                             f'--num_processes={num_processes}.')
  if not coordinator_address:
    if os.environ.get('JAX_COORDINATOR_ADDRESS') or _in_cluster():
      return  # JAX reads it from the environment
    raise errors.ConfigError(
        f'--num_processes={num_processes} needs --coordinator_address=<host:port of process 0>, '
        'the same for every process (e.g. --coordinator_address=127.0.0.1:12355 on one machine).')
  host, _, port = coordinator_address.rpartition(':')
  if not host or not port.isdigit() or not 0 < int(port) < 65536:
    raise errors.ConfigError(f'--coordinator_address={coordinator_address!r} must be host:port '
                             '(e.g. 127.0.0.1:12355, or the hostname of process 0 and a free port).')


def _check_port_free(coordinator_address: str) -> None:
  """Process 0 serves the coordinator on every interface at the port: fail early if it is taken
  (the coordinator service crashes the process instead of reporting it)."""
  port = int(coordinator_address.rpartition(':')[2])
  for family, host in ((socket.AF_INET6, '::'), (socket.AF_INET, '0.0.0.0')):
    try:
      probe = socket.socket(family, socket.SOCK_STREAM)
    except OSError:
      continue  # e.g. no IPv6 here
    with probe:
      probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
      try:
        probe.bind((host, port))
        return
      except OSError as e:
        if e.errno == errno.EADDRINUSE:
          raise errors.ConfigError(
              f'--coordinator_address={coordinator_address}: port {port} is already in use on this '
              'host (by another run?); pick a free port for every process of this run.') from None


@contextlib.contextmanager
def _deadline(timeout_s: float, message: str) -> Iterator[None]:
  """Prints `kd_jax: error: <message>` and exits 2 if the body has not returned after `timeout_s`."""
  def expire():
    print(f'kd_jax: error: {message}', file=sys.stderr, flush=True)
    os._exit(2)  # pylint: disable=protected-access  # the main thread is blocked inside C++
  timer = threading.Timer(timeout_s, expire)
  timer.daemon = True
  timer.start()
  try:
    yield
  finally:
    timer.cancel()


def _in_cluster() -> bool:
  if os.environ.get('KD_JAX_DISTRIBUTED') == '1':
    return True
  for var in ('SLURM_NTASKS', 'OMPI_COMM_WORLD_SIZE'):
    if int(os.environ.get(var, '1') or 1) > 1:
      return True
  return 'JAX_COORDINATOR_ADDRESS' in os.environ
