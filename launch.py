"""Launch a kd_jax run from a config file.

  python launch.py --config configs/fashion_mnist/teacher.py --workdir workdirs/fm_teacher
  python launch.py --config configs/fashion_mnist/kd_student.py:tiny --workdir /tmp/x \
      --config.total_steps=50

Several processes (one per host, or several on one machine): pass --num_processes/--process_id/
--coordinator_address, or run under a cluster launcher that JAX detects (SLURM, Open MPI, TPU pods,
KD_JAX_DISTRIBUTED=1). A process that does not see all of them connect within
--distributed_timeout_s stops with one line naming the coordinator and the missing process ids.

Every error a user can cause (flags, the config file, config values, paths, checkpoints, datasets,
missing processes) ends in one line `kd_jax: error: <problem and fix>` on stderr and exit status 2
(3 for a diverged run); a preempted run (SIGTERM/SIGINT, checkpoint saved) exits 128 + the signal.
"""
import os
import sys

# Before anything imports TensorFlow (TFDS, clu): its C++ start-up lines stay hidden unless
# --verbosity is given (the same rule as kd_jax.quiet, which cannot be imported this early).
if not any(arg.startswith(('--verbosity', '-v=', '--v=')) for arg in sys.argv[1:]):
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  # TensorFlow (input and TensorBoard only here) announces its oneDNN ops on CPUs that have them
  # through a logger TF_CPP_MIN_LOG_LEVEL does not silence; JAX/XLA does not read this variable.
  os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '0')

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Path to a config file[:arg].',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for checkpoints, summaries and reports.')
_COORD = flags.DEFINE_string('coordinator_address', None, 'host:port of process 0 (multi-process).')
_NPROC = flags.DEFINE_integer('num_processes', None, 'Number of processes (multi-process).')
_PID = flags.DEFINE_integer('process_id', None, 'This process index (multi-process).')
_CPU_COLL = flags.DEFINE_string('cpu_collectives', None,
                                "CPU cross-process collectives, e.g. 'gloo' (CPU-only multi-process).")
_DIST_TIMEOUT = flags.DEFINE_integer(
    'distributed_timeout_s', 300, 'Seconds a process waits for all processes to connect to the '
    'coordinator (multi-process) before it stops with an error.')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  if len(argv) > 1:
    _fail(f'unexpected arguments {argv[1:]}: every option is a flag, e.g. --workdir=DIR or '
          '--config.<field>=value (see python launch.py --help).')
  _quiet_logs()
  # Imports after flag parsing so --help is fast and XLA_FLAGS set by the caller take effect.
  from kd_jax import errors, parallel, trainers  # pylint: disable=import-outside-toplevel
  try:
    config = _loaded_config()
    parallel.maybe_initialize_distributed(_COORD.value, _NPROC.value, _PID.value, _CPU_COLL.value,
                                          timeout_s=_DIST_TIMEOUT.value)
    trainer = trainers.get(config.get('trainer', 'classification'))
    trainer(config, _WORKDIR.value)
  except errors.KDError as e:
    _fail(str(e), e.exit_code)
  except errors.Preempted as e:  # not an error: the checkpoint is saved, rerunning resumes
    print(f'[kd_jax] {e}', flush=True)
    sys.exit(e.exit_code)
  if parallel.is_chief():
    print(f"[kd_jax] done: summary at {_WORKDIR.value}/summary.json; TensorBoard: "
          f"tensorboard --logdir {_WORKDIR.value}", flush=True)


def _fail(message: str, exit_code: int = 2) -> None:
  print(f"kd_jax: error: {' '.join(message.split())}", file=sys.stderr, flush=True)
  sys.exit(exit_code)


def _loaded_config():
  """The parsed --config. config_flags defers the error of a file it cannot open until the config is
  used; loading the file again here says what is wrong (missing file, no get_config, ...)."""
  import ml_collections  # pylint: disable=import-outside-toplevel
  config = _CONFIG.value
  if isinstance(config, ml_collections.ConfigDict):
    return config
  config = _load_spec(config_flags.get_config_filename(flags.FLAGS['config']))
  config.lock()
  return config


def _load_spec(spec: str):
  """`path[:arg]` loaded as config_flags loads it (a relative path is relative to the working dir)."""
  from kd_jax import config_utils  # pylint: disable=import-outside-toplevel
  path, sep, arg = spec.partition(':')
  return config_utils.load_config_file(path, arg if sep else None, relative_to=os.getcwd())


def _parse_flags(argv: list[str]) -> list[str]:
  """absl's parser; any error (a bad flag, a config file that does not load, a misspelled or
  mistyped --config.<field>) becomes one line and exit code 2, like every other user error."""
  try:
    return flags.FLAGS(argv)
  except Exception as e:  # pylint: disable=broad-except
    # Only absl, ml_collections and the user's config file run here: every failure is the user's.
    _fail(_flag_problem(e, argv))
  return []


def _flag_problem(e: Exception, argv: list[str]) -> str:
  """What went wrong while parsing `argv`, naming the config file or field and the fix.

  The config file is loaded again on its own (config files are pure functions): if that fails, it is
  the problem; otherwise each --config.<field> override is checked against the loaded config.
  """
  from kd_jax import config_utils, errors  # pylint: disable=import-outside-toplevel
  spec = _flag_value(argv, 'config')
  if spec is not None:
    try:
      config = _load_spec(spec)
      for dotted, raw in _overrides(argv):
        config_utils.check_override(config, dotted, raw)
    except errors.ConfigError as err:
      return str(err)
    except Exception:  # pylint: disable=broad-except
      pass  # absl's own message below
  text = e.args[0] if e.args and isinstance(e.args[0], str) else str(e)
  # ml_collections nests a KeyError's repr in its message: unescape it for one readable line.
  text = text.replace('\\n', ' ').replace("\\'", "'").replace("''", "'")
  if text.endswith("'") and text.count("'") % 2:
    text = text[:-1]
  return f"bad flag: {' '.join(text.split())[:600]}"


def _flag_value(argv: list[str], name: str) -> str | None:
  """The last value of --name (given as --name=v or --name v) in argv, or None."""
  value = None
  for i, token in enumerate(argv[1:], 1):
    if token == '--':
      break
    for prefix in (f'--{name}', f'-{name}'):
      if token.startswith(prefix + '='):
        value = token[len(prefix) + 1:]
      elif token == prefix and i + 1 < len(argv):
        value = argv[i + 1]
  return value


def _overrides(argv: list[str]) -> list[tuple[str, str | None]]:
  """(dotted field, raw value or None) of every --config.<field> (or --noconfig.<field>) in argv."""
  out = []
  for i, token in enumerate(argv[1:], 1):
    if token == '--':
      break
    name = token.lstrip('-')
    if not token.startswith('-') or not name.startswith(('config.', 'noconfig.')):
      continue
    name, eq, raw = name.partition('=')
    if not eq and name.startswith('config.') and i + 1 < len(argv) and not argv[i + 1].startswith('-'):
      raw, eq = argv[i + 1], '='
    out.append((name.split('.', 1)[1], raw if eq else None))
  return out


def _quiet_logs() -> None:
  # Orbax/clu INFO lines and known harmless warnings drown the progress line (kd_jax.quiet);
  # --verbosity=0 brings them back.
  from kd_jax import quiet  # pylint: disable=import-outside-toplevel
  quiet.install(verbose=flags.FLAGS['verbosity'].present)


if __name__ == '__main__':
  app.run(main, flags_parser=_parse_flags)
