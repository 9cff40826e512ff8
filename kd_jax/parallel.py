"""Device mesh, shardings and multi-process helpers.

Data parallelism is `jax.jit` over a 1-D `Mesh` with a `data` axis: the batch is sharded along it and
params are replicated. This is what `pmap` did; JAX recommends jit + shardings since pmap went into
maintenance. Under jit a BatchNorm batch mean over a sharded batch is a global mean, so BN statistics
come out the same as on one device without any `axis_name` plumbing.
"""
from __future__ import annotations

import os
from typing import Any, Mapping

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from kd_jax import errors
from kd_jax.types import PyTree

DATA_AXIS = 'data'


def make_mesh(devices: list[jax.Device] | None = None) -> Mesh:
  """A 1-D mesh over all (or the given) devices with axis `data`."""
  devices = jax.devices() if devices is None else devices
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split across the `data` axis."""
  return NamedSharding(mesh, P(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
  """Fully replicated on every device of the mesh."""
  return NamedSharding(mesh, P())


def check_global_batch(global_batch_size: int, mesh: Mesh, field: str | None = None) -> int:
  """Returns the per-process batch size; raises if the batch does not split over devices/processes.

  `field` is only kept for old callers (it prefixes the message); name the config field with
  `kd_jax.config_utils.field_context` instead.
  """
  n = mesh.devices.size
  if global_batch_size % n:
    problem = (f'global batch size {global_batch_size} is not divisible by the {n} devices of the '
               f'mesh; use a multiple of {n}.')
    raise errors.ConfigError(f'{field}: {problem}' if field else problem)
  return global_batch_size // jax.process_count()


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
                                 cpu_collectives: str | None = None) -> bool:
  """Initialises `jax.distributed` when this is one of several processes.

  Explicit arguments win; otherwise the usual cluster environments are honoured (JAX auto-detects
  SLURM, Open MPI, TPU pods, Kubernetes via `jax.distributed.initialize()` without arguments) when
  `KD_JAX_DISTRIBUTED=1` or a known cluster variable is present. Returns whether it initialised.
  """
  if cpu_collectives:
    # CPU collectives across processes need an implementation (gloo works on localhost here).
    jax.config.update('jax_cpu_collectives_implementation', cpu_collectives)
  if num_processes is not None and num_processes > 1:
    jax.distributed.initialize(coordinator_address=coordinator_address,
                               num_processes=num_processes, process_id=process_id)
    return True
  if _in_cluster():
    jax.distributed.initialize()
    return True
  return False


def _in_cluster() -> bool:
  if os.environ.get('KD_JAX_DISTRIBUTED') == '1':
    return True
  for var in ('SLURM_NTASKS', 'OMPI_COMM_WORLD_SIZE'):
    if int(os.environ.get(var, '1') or 1) > 1:
      return True
  return 'JAX_COORDINATOR_ADDRESS' in os.environ
