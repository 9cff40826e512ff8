"""Launch a kd_jax run from a config file.

  python launch.py --config configs/fashion_mnist/teacher.py --workdir workdirs/fm_teacher
  python launch.py --config configs/fashion_mnist/kd_student.py:tiny --workdir /tmp/x \
      --config.total_steps=50

Several processes (one per host, or several on one machine): pass --num_processes/--process_id/
--coordinator_address, or run under a cluster launcher that JAX detects (SLURM, Open MPI, TPU pods,
KD_JAX_DISTRIBUTED=1).
"""
import sys

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Path to a config file[:arg].',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for checkpoints, summaries and reports.')
_COORD = flags.DEFINE_string('coordinator_address', None, 'host:port of process 0 (multi-process).')
_NPROC = flags.DEFINE_integer('num_processes', None, 'Number of processes (multi-process).')
_PID = flags.DEFINE_integer('process_id', None, 'This process index (multi-process).')
_CPU_COLL = flags.DEFINE_string('cpu_collectives', None,
                                "CPU cross-process collectives, e.g. 'gloo' (CPU-only multi-process).")
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  _quiet_logs()
  # Imports after flag parsing so --help is fast and XLA_FLAGS set by the caller take effect.
  from kd_jax import errors, parallel, trainers  # pylint: disable=import-outside-toplevel
  try:
    parallel.maybe_initialize_distributed(_COORD.value, _NPROC.value, _PID.value, _CPU_COLL.value)
    config = _CONFIG.value
    trainer = trainers.get(config.get('trainer', 'classification'))
    trainer(config, _WORKDIR.value)
  except errors.KDError as e:
    print(f'kd_jax: error: {e}', file=sys.stderr, flush=True)
    sys.exit(2)
  if parallel.is_chief():
    print(f"[kd_jax] done: summary at {_WORKDIR.value}/summary.json; TensorBoard: "
          f"tensorboard --logdir {_WORKDIR.value}", flush=True)


def _parse_flags(argv: list[str]) -> list[str]:
  """absl's parser, with config-flag errors (a misspelled --config.<field> raises ml_collections'
  AttributeError, not flags.Error) as one line and exit code 2, like every other user error."""
  try:
    return flags.FLAGS(argv)
  except (flags.Error, AttributeError, KeyError) as e:
    text = e.args[0] if e.args and isinstance(e.args[0], str) else str(e)
    # ml_collections nests a KeyError's repr in its message: unescape it for one readable line.
    text = text.replace('\\n', ' ').replace("\\'", "'").replace("''", "'")
    if text.endswith("'") and text.count("'") % 2:
      text = text[:-1]
    print(f"kd_jax: error: bad flag: {' '.join(text.split())}", file=sys.stderr, flush=True)
    sys.exit(2)


def _quiet_logs() -> None:
  # Orbax/clu INFO lines drown the progress line; --verbosity=0 brings them back.
  if not flags.FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)


if __name__ == '__main__':
  app.run(main, flags_parser=_parse_flags)
