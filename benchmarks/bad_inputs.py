"""Bad-input sweep: every case a real `launch.py` subprocess given one thing a user gets wrong.

  python benchmarks/bad_inputs.py                  # all cases (≈ 15-20 min on 2 busy cores)
  python benchmarks/bad_inputs.py --list           # the cases, by category
  python benchmarks/bad_inputs.py --only teacher_  # the cases whose name contains the substring
  python benchmarks/bad_inputs.py --root /tmp/bad --keep   # reuse the tiny data and teachers

Categories: CLI flags (field typos, unknown/missing flags), config files (missing, syntax error, no
get_config, bad `:variant`, raising, a directory), wrong types and values (str/float/bool/list where
another type belongs, zero/negative counts, a batch the devices do not divide, bad learning rates),
data (garbage data_dir, damaged IDX files, damaged prepared TFDS dataset, unknown or
download-only datasets), teacher checkpoints (missing, a file, a GAN run, damaged metadata or
arrays, a model config that does not match), workdirs (uncreatable, a file, another run's, a
shortened run) and multi-process start-up (missing flags, out-of-range ids, a process that never
comes, a coordinator port in use).

Shared fixtures are built once under the root (a temp dir, or `--root`): the tiny Fashion-MNIST
TFDS data dir of the tests (tests/conftest.py's `make_tiny_idx` + kd_jax's offline builder), a tiny
ResNet-20 classification teacher (configs/fashion_mnist/teacher.py:tiny) and a tiny GAN
(configs/fashion_mnist/gan_teacher.py:tiny). Each case gets a fresh directory holding its own inputs
(damaged copies, config files) and a workdir `w` that does not exist yet.

Measured per case: exit status; whether stdout or stderr holds a Python traceback; whether it hung
(no exit within HANG_TIMEOUT_S: killed, counted as a hang); whether it printed exactly one
`kd_jax: error: ...` line (launch.py's format) naming the problem (the case's key words, e.g. the
field or file); whether anything already on disk changed (sha256 of every file under the fixtures
and the case's inputs, before and after: a changed or deleted file is damage; new files are fine,
those written into a directory that existed before are listed). A case passes with a non-zero exit,
no traceback, no hang, no damage and one such line. Cases marked "by design" (a value the code may
accept, e.g. a batch larger than the split) are noted, not failed, when they exit 0. Exit status of this script:
1 if any case fails.
"""
from __future__ import annotations

import argparse
import dataclasses
import glob
import gzip
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, 'benchmarks'))
from fault_injection import child_env  # noqa: E402  # pylint: disable=wrong-import-position

HANG_TIMEOUT_S = 300      # a launch that has not exited by then is killed and counted as a hang
FIXTURE_TIMEOUT_S = 600   # building the data dir or training a tiny teacher
DIST_TIMEOUT_S = 20       # --distributed_timeout_s of the multi-process cases
TRACEBACK = 'Traceback (most recent call last)'
ERROR_PREFIX = 'kd_jax: error:'

TEACHER = 'configs/fashion_mnist/teacher.py:tiny'
KD = 'configs/fashion_mnist/kd_student.py:tiny'
GAN = 'configs/fashion_mnist/gan_teacher.py:tiny'
FUNMATCH = 'configs/fashion_mnist/funmatch.py:tiny'


def log(message: str) -> None:
  print(f'[bad_inputs] {message}', flush=True)


# --------------------------------------------------------------------------------------------------
# Shared fixtures


@dataclasses.dataclass(frozen=True)
class Fixtures:
  """The shared, never-to-be-damaged inputs every case may read."""
  root: str
  data: str      # TFDS data dir with the tiny fashion_mnist
  idx: str       # the tiny gzipped IDX files it was built from
  teacher: str   # workdir of a finished tiny classification teacher
  gan: str       # workdir of a finished tiny GAN

  def guarded(self) -> list[str]:
    return [self.data, self.idx, self.teacher, self.gan]


def _run_fixture(cmd: list[str], env: dict[str, str], what: str) -> None:
  proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True,
                        timeout=FIXTURE_TIMEOUT_S)
  if proc.returncode != 0:
    raise RuntimeError(f'{what} failed (exit {proc.returncode}): {proc.stderr[-2000:]}')


def build_fixtures(root: str, env: dict[str, str]) -> Fixtures:
  """Builds (or reuses, under `--root`) the tiny data dir and the two tiny teachers."""
  fx = Fixtures(root, os.path.join(root, 'data'), os.path.join(root, 'idx'),
                os.path.join(root, 'teacher'), os.path.join(root, 'gan_teacher'))
  if not os.path.isdir(os.path.join(fx.data, 'fashion_mnist')):
    log('building the tiny Fashion-MNIST data dir')
    # In a child, so this process never imports TF/JAX (fault_injection's builder, the tests' data).
    code = ('import sys; sys.path.insert(0, "benchmarks"); import fault_injection; '
            f'fault_injection.build_tiny_data({root!r})')
    _run_fixture([sys.executable, '-c', code], env, 'data build')
  for workdir, config, extra in ((fx.teacher, TEACHER, []),
                                 (fx.gan, GAN, ['--config.eval.classifier_checkpoint='])):
    if not os.path.exists(os.path.join(workdir, 'summary.json')):
      log(f'training {config} into {workdir}')
      _run_fixture([sys.executable, 'launch.py', f'--config={config}', f'--workdir={workdir}',
                    f'--config.data.data_dir={fx.data}', *extra], env, f'{config} run')
  return fx


# --------------------------------------------------------------------------------------------------
# Cases


@dataclasses.dataclass
class Prepared:
  """What one case runs: launch.py arguments, extra environment, an object held open meanwhile."""
  args: list[str]
  env: dict[str, str] = dataclasses.field(default_factory=dict)
  hold: Any = None   # e.g. a socket occupying a port; closed after the run


@dataclasses.dataclass(frozen=True)
class Case:
  name: str
  category: str
  prepare: Callable[[Fixtures, str], Prepared]   # (fixtures, the case's fresh dir) -> run
  expect: tuple[str, ...]   # each must occur in the error line (case-insensitive; 'a|b': either)
  by_design: bool = False   # exit 0 may be the intended behaviour: noted, not failed


def launch_args(config: str, workdir: str, *flags: str) -> list[str]:
  return [f'--config={config}', f'--workdir={workdir}', *flags]


def run(config: str, *flags: str, data: bool = True, teacher: bool | None = None
        ) -> Callable[[Fixtures, str], Prepared]:
  """A case that only needs flags: `config` into `<case dir>/w` on the tiny data (and, for the KD
  config, the tiny teacher), then `flags` ({d} = the case dir, {teacher}/{gan}/{data} fixtures)."""
  def prepare(fx: Fixtures, d: str) -> Prepared:
    pre = [f'--config.data.data_dir={fx.data}'] if data else []
    with_teacher = config == KD if teacher is None else teacher
    if with_teacher:
      pre.append(f'--config.teacher.checkpoint={fx.teacher}')
    sub = dict(d=d, teacher=fx.teacher, gan=fx.gan, data=fx.data, idx=fx.idx)
    return Prepared(launch_args(config, os.path.join(d, 'w'), *pre,
                                *(f.format(**sub) for f in flags)))
  return prepare


def write(path: str, text: str | bytes) -> str:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, 'wb' if isinstance(text, bytes) else 'w') as f:
    f.write(text)
  return path


def config_file(name: str, text: str, variant: str = '', *flags: str
                ) -> Callable[[Fixtures, str], Prepared]:
  """A case whose --config is a file `name` with `text`, written into the case dir."""
  def prepare(fx: Fixtures, d: str) -> Prepared:
    path = write(os.path.join(d, name), text)
    return Prepared(launch_args(path + variant, os.path.join(d, 'w'),
                                f'--config.data.data_dir={fx.data}', *flags))
  return prepare


TINY_TEACHER_FILE = ('from configs.fashion_mnist import teacher\n\n'
                     'def get_config(arg=None):\n  c = teacher.get_config("tiny")\n{body}  return c\n')


# -- data helpers


def _copy_idx(fx: Fixtures, d: str) -> str:
  dst = os.path.join(d, 'idx')
  shutil.copytree(fx.idx, dst)
  return dst


def _truncate(path: str, keep: float = 0.5) -> None:
  with open(path, 'r+b') as f:
    f.truncate(int(os.path.getsize(path) * keep))


def idx_case(damage: Callable[[str], None] | None) -> Callable[[Fixtures, str], Prepared]:
  """A fresh data dir built from a damaged copy of the IDX files (or a missing IDX dir)."""
  def prepare(fx: Fixtures, d: str) -> Prepared:
    if damage is None:
      idx = os.path.join(d, 'no_idx_here')
    else:
      idx = _copy_idx(fx, d)
      damage(idx)
    return Prepared(launch_args(TEACHER, os.path.join(d, 'w'),
                                f'--config.data.data_dir={os.path.join(d, "tfds")}'),
                    env={'KD_JAX_FASHION_MNIST_IDX_DIR': idx})
  return prepare


def _truncate_t10k_labels(idx: str) -> None:
  _truncate(os.path.join(idx, 't10k-labels-idx1-ubyte.gz'))


def _bad_magic_train_images(idx: str) -> None:
  # A valid gzip whose IDX header says int32 (0x0C) instead of unsigned bytes (0x08).
  path = os.path.join(idx, 'train-images-idx3-ubyte.gz')
  with gzip.open(path, 'rb') as f:
    raw = bytearray(f.read())
  raw[2] = 0x0C
  with gzip.open(path, 'wb') as f:
    f.write(bytes(raw))


def tfds_case(name: str, damage: Callable[[str], None]) -> Callable[[Fixtures, str], Prepared]:
  """A damaged copy `<case dir>/<name>` of the prepared TFDS data dir."""
  def prepare(fx: Fixtures, d: str) -> Prepared:
    data = os.path.join(d, name)
    shutil.copytree(fx.data, data)
    damage(data)
    return Prepared(launch_args(TEACHER, os.path.join(d, 'w'), f'--config.data.data_dir={data}'))
  return prepare


def _truncate_train_records(data: str) -> None:
  for p in glob.glob(f'{data}/fashion_mnist/*/*-train.array_record*'):
    _truncate(p)


def _delete_dataset_info(data: str) -> None:
  for p in glob.glob(f'{data}/fashion_mnist/*/dataset_info.json'):
    os.remove(p)


def _junk_dir(d: str) -> str:
  write(os.path.join(d, 'junk', 'notes.txt'), 'keep me')
  write(os.path.join(d, 'junk', 'photos', 'a.jpg'), os.urandom(64))
  return os.path.join(d, 'junk')


def data_dir_case(make: Callable[[str], str]) -> Callable[[Fixtures, str], Prepared]:
  def prepare(fx: Fixtures, d: str) -> Prepared:
    return Prepared(launch_args(TEACHER, os.path.join(d, 'w'), f'--config.data.data_dir={make(d)}'))
  return prepare


# -- teacher helpers


def _newest_step(workdir: str) -> str:
  steps = [p for p in glob.glob(f'{workdir}/checkpoints/*') if os.path.basename(p).isdigit()]
  return max(steps, key=lambda p: int(os.path.basename(p)))


def teacher_copy_case(damage: Callable[[str], None], config: str = KD, *flags: str
                      ) -> Callable[[Fixtures, str], Prepared]:
  """The KD student from a copy of the tiny teacher whose newest step is damaged."""
  def prepare(fx: Fixtures, d: str) -> Prepared:
    teacher = os.path.join(d, 'teacher')
    shutil.copytree(fx.teacher, teacher)
    damage(_newest_step(teacher))
    return Prepared(launch_args(config, os.path.join(d, 'w'), f'--config.data.data_dir={fx.data}',
                                f'--config.teacher.checkpoint={teacher}', *flags))
  return prepare


def _garbage_meta(step_dir: str) -> None:
  write(f'{step_dir}/meta/metadata', '{not json')


def _truncate_export_arrays(step_dir: str) -> None:
  files = [p for p in glob.glob(f'{step_dir}/export/**', recursive=True) if os.path.isfile(p)
           and '/d/' in p]
  for p in files or [p for p in glob.glob(f'{step_dir}/export/**', recursive=True)
                     if os.path.isfile(p)]:
    _truncate(p)


# -- workdir helpers


def resume_case(config: str, *flags: str) -> Callable[[Fixtures, str], Prepared]:
  """`config` launched into a copy of the finished tiny teacher's workdir."""
  def prepare(fx: Fixtures, d: str) -> Prepared:
    workdir = os.path.join(d, 'teacher_run')
    shutil.copytree(fx.teacher, workdir)
    pre = [f'--config.data.data_dir={fx.data}']
    if config == KD:
      pre.append(f'--config.teacher.checkpoint={fx.teacher}')
    return Prepared(launch_args(config, workdir, *pre, *flags))
  return prepare


def workdir_case(make: Callable[[str], str]) -> Callable[[Fixtures, str], Prepared]:
  def prepare(fx: Fixtures, d: str) -> Prepared:
    return Prepared(launch_args(TEACHER, make(d), f'--config.data.data_dir={fx.data}'))
  return prepare


def _file_in(d: str, name: str) -> str:
  return write(os.path.join(d, name), 'keep me')


# -- multi-process helpers


def free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def dist_case(*flags: str, occupy: bool = False) -> Callable[[Fixtures, str], Prepared]:
  """The tiny teacher with multi-process flags; {addr} = 127.0.0.1:<a free port> (or, `occupy`,
  a port another socket is listening on)."""
  def prepare(fx: Fixtures, d: str) -> Prepared:
    hold = None
    if occupy:
      hold = socket.socket()
      hold.bind(('0.0.0.0', 0))
      hold.listen(1)
      port = hold.getsockname()[1]
    else:
      port = free_port()
    addr = f'127.0.0.1:{port}'
    return Prepared(launch_args(TEACHER, os.path.join(d, 'w'), f'--config.data.data_dir={fx.data}',
                                *(f.format(addr=addr) for f in flags)), hold=hold)
  return prepare


DIST = ('--cpu_collectives=gloo', f'--distributed_timeout_s={DIST_TIMEOUT_S}')


def cases() -> list[Case]:
  c = []

  def add(name: str, category: str, prepare: Callable[[Fixtures, str], Prepared],
          *expect: str, by_design: bool = False) -> None:
    c.append(Case(name, category, prepare, tuple(expect), by_design))

  # CLI flags.
  add('cli_typo_total_steps', 'cli', run(KD, '--config.totl_steps=5'), 'totl_steps')
  add('cli_typo_model_width', 'cli', run(KD, '--config.model.widht=3'), 'widht')
  add('cli_unknown_flag', 'cli', run(TEACHER, '--wrkdir={d}/w2'), 'wrkdir')
  add('cli_override_without_value', 'cli', run(TEACHER, '--config.total_steps'), 'total_steps')
  add('cli_nonexistent_section', 'cli', run(TEACHER, '--config.optim.learning_rate=0.1'),
      'optim.learning_rate')
  add('cli_scalar_over_section', 'cli', run(TEACHER, '--config.data=5', data=False), 'data')
  add('cli_no_config', 'cli', lambda fx, d: Prepared([f'--workdir={d}/w']), '--config')
  add('cli_extra_positional', 'cli', run(TEACHER, 'resume'), 'resume')

  # Config files.
  add('cfg_missing_file', 'config', lambda fx, d: Prepared(launch_args(
      'configs/fashion_mnist/kd_studnt.py:tiny', f'{d}/w')), 'kd_studnt.py')
  add('cfg_syntax_error', 'config', config_file(
      'syntax.py', 'import ml_collections\ndef get_config(arg=None)\n  return 1\n'), 'syntax.py')
  add('cfg_no_get_config', 'config', config_file(
      'noget.py', 'import ml_collections\n\ndef config():\n  return ml_collections.ConfigDict()\n'),
      'get_config')
  add('cfg_unknown_variant', 'config', lambda fx, d: Prepared(launch_args(
      'configs/fashion_mnist/teacher.py:tinyy', f'{d}/w')), 'tinyy')
  add('cfg_raises', 'config', config_file(
      'raises.py', 'def get_config(arg=None):\n  raise RuntimeError("boom: KD_ROOT is not set")\n'),
      'raises.py', 'boom')
  add('cfg_directory', 'config', lambda fx, d: Prepared(launch_args(
      'configs/fashion_mnist', f'{d}/w')), 'configs/fashion_mnist')
  add('cfg_unknown_trainer', 'config', config_file(
      'trainer.py', TINY_TEACHER_FILE.format(body='  c.trainer = "classifcation"\n')),
      'classifcation')
  add('cfg_misspelled_field', 'config', config_file(
      'typo.py', TINY_TEACHER_FILE.format(body='  c.optimizer.learning_rte = 0.1\n')),
      'learning_rte')
  add('cfg_loss_kwarg_typo', 'config', config_file('losskw.py', TINY_TEACHER_FILE.format(
      body="  c.losses = [('ce', 1.0, {'label_smoothin': 0.1})]\n")), 'label_smoothin')
  add('cfg_yaml_file', 'config', config_file(
      'config.yaml', 'trainer: classification\ntotal_steps: 5\n'), 'config.yaml')

  # Wrong types and values.
  add('type_str_for_int', 'value', run(TEACHER, '--config.total_steps=abc'), 'total_steps', 'abc')
  add('type_float_for_int', 'value', run(TEACHER, '--config.total_steps=2.5'), 'total_steps', '2.5')
  add('type_bool_maybe', 'value', run(TEACHER, '--config.data.augment=maybe'), 'augment', 'maybe')
  add('type_str_for_list', 'value', run(TEACHER, '--config.losses=ce'), 'losses')
  add('total_steps_zero', 'value', run(TEACHER, '--config.total_steps=0'), 'total_steps')
  add('total_steps_negative', 'value', run(TEACHER, '--config.total_steps=-5'), 'total_steps')
  add('log_every_zero', 'value', run(TEACHER, '--config.log_every=0'), 'log_every')
  add('checkpoint_every_zero', 'value', run(TEACHER, '--config.checkpoint_every=0'),
      'checkpoint_every')
  add('keep_checkpoints_zero', 'value', run(TEACHER, '--config.keep_checkpoints=0'),
      'keep_checkpoints')
  add('eval_every_negative', 'value', run(TEACHER, '--config.eval_every=-1'), 'eval_every')
  add('batch_size_negative', 'value', run(TEACHER, '--config.data.batch_size=-32'), 'batch_size')
  add('batch_size_zero', 'value', run(TEACHER, '--config.data.batch_size=0'), 'batch_size')

  def indivisible(fx: Fixtures, d: str) -> Prepared:
    p = run(TEACHER, '--config.data.batch_size=12')(fx, d)
    p.env['XLA_FLAGS'] = '--xla_force_host_platform_device_count=8'
    return p
  add('batch_size_not_divisible_by_8_devices', 'value', indivisible, 'batch_size', '12')
  add('learning_rate_negative', 'value', run(TEACHER, '--config.optimizer.learning_rate=-0.1'),
      'learning_rate')
  add('learning_rate_nan', 'value', run(TEACHER, '--config.optimizer.learning_rate=nan'),
      'learning_rate')
  add('warmup_steps_negative', 'value', run(TEACHER, '--config.optimizer.warmup_steps=-10'),
      'warmup_steps')
  add('optimizer_name_typo', 'value', run(TEACHER, '--config.optimizer.name=adamm'), 'adamm')
  add('num_classes_below_labels', 'value', run(TEACHER, '--config.model.num_classes=5'),
      'num_classes')
  # Global batches run across epoch boundaries (kd_jax.data.train_iterator): may be accepted.
  add('batch_size_above_train_set', 'value', run(TEACHER, '--config.data.batch_size=1024'),
      'batch_size', by_design=True)
  add('crop_padding_negative', 'value', run(TEACHER, '--config.data.crop_padding=-2'),
      'crop_padding')
  # Function matching: no label term, so the mixup value itself reaches the augmentation.
  add('mixup_alpha_negative', 'value', run(FUNMATCH, '--config.data.mixup_alpha=-1.0',
                                           teacher=True), 'mixup_alpha')

  # Data.
  add('data_dir_is_a_file', 'data', data_dir_case(lambda d: _file_in(d, 'notadir')), 'notadir')
  add('data_dir_with_junk', 'data', data_dir_case(_junk_dir), 'junk')
  add('data_dir_under_a_file', 'data',
      data_dir_case(lambda d: os.path.join(_file_in(d, 'notadir'), 'tfds')), 'notadir/tfds')
  add('idx_truncated_gz', 'data', idx_case(_truncate_t10k_labels), 't10k-labels-idx1-ubyte.gz')
  add('idx_wrong_magic', 'data', idx_case(_bad_magic_train_images), 'train-images-idx3-ubyte.gz')
  add('idx_dir_missing', 'data', idx_case(None), 'no_idx_here')
  add('tfds_truncated_array_record', 'data', tfds_case('tfds_cut', _truncate_train_records),
      'tfds_cut')
  add('tfds_no_dataset_info', 'data', tfds_case('tfds_noinfo', _delete_dataset_info),
      'tfds_noinfo')
  add('dataset_name_unknown', 'data', run(TEACHER, '--config.data.name=no_such_dataset'),
      'no_such_dataset')
  add('dataset_needs_download_mnist', 'data', run(
      TEACHER, '--config.data.name=mnist', '--config.data.data_dir={d}/tfds', data=False), 'mnist')
  add('train_split_below_batch', 'data', run(TEACHER, '--config.data.train_split=train[:10]'),
      'train', by_design=True)
  add('split_unknown', 'data', run(TEACHER, '--config.data.eval_split=validation'), 'validation')

  # Teacher checkpoints.
  add('teacher_missing', 'teacher', run(KD, '--config.teacher.checkpoint={d}/no_teacher_here'),
      'no_teacher_here')

  def teacher_file(fx: Fixtures, d: str) -> Prepared:
    path = _file_in(d, 'teacher_file')
    return run(KD, f'--config.teacher.checkpoint={path}')(fx, d)
  add('teacher_is_a_file', 'teacher', teacher_file, 'teacher_file')

  def teacher_empty(fx: Fixtures, d: str) -> Prepared:
    os.makedirs(os.path.join(d, 'empty_teacher'))
    return run(KD, '--config.teacher.checkpoint={d}/empty_teacher')(fx, d)
  add('teacher_empty_dir', 'teacher', teacher_empty, 'empty_teacher')
  add('teacher_is_gan_run', 'teacher', run(KD, '--config.teacher.checkpoint={gan}'),
      'teacher.checkpoint', 'gan')
  add('teacher_corrupt_meta_json', 'teacher', teacher_copy_case(_garbage_meta),
      'teacher.checkpoint', 'meta')
  add('teacher_truncated_arrays', 'teacher', teacher_copy_case(_truncate_export_arrays),
      'teacher.checkpoint', 'export')
  add('teacher_model_width_mismatch', 'teacher', run(KD, '--config.teacher.model.width=8'),
      'teacher.model')
  add('student_classes_differ_from_teacher', 'teacher', run(KD, '--config.model.num_classes=5'),
      'shape|num_classes')

  def unfinished(step_dir: str) -> None:
    # Every step left as an interrupted orbax write (a teacher killed during its first save).
    for step in glob.glob(os.path.join(os.path.dirname(step_dir), '*')):
      if os.path.basename(step).isdigit():
        os.rename(step, f'{step}.orbax-checkpoint-tmp-1700000000')
  add('teacher_only_unfinished_steps', 'teacher', teacher_copy_case(unfinished),
      'teacher.checkpoint')
  add('teacher_unset_for_kd', 'teacher', run(KD, '--config.teacher.checkpoint=', teacher=False),
      'teacher')
  add('eval_classifier_is_gan_run', 'teacher', run(GAN, '--config.eval.classifier_checkpoint={gan}'),
      'classifier_checkpoint', 'gan')
  add('eval_classifier_missing', 'teacher', run(
      GAN, '--config.eval.classifier_checkpoint={d}/no_classifier_here'), 'no_classifier_here')
  add('eval_feature_layer_missing', 'teacher', run(
      GAN, '--config.eval.classifier_checkpoint={teacher}', '--config.eval.feature_layer=no_such_layer'),
      'no_such_layer')

  # Workdirs.
  add('workdir_under_a_file', 'workdir',
      workdir_case(lambda d: os.path.join(_file_in(d, 'notadir'), 'w')), 'notadir')
  add('workdir_under_proc', 'workdir', workdir_case(lambda d: '/proc/kd_jax_no/w'), '/proc/')
  add('workdir_is_a_file', 'workdir', workdir_case(lambda d: _file_in(d, 'workdir_file')),
      'workdir_file')
  add('workdir_empty', 'workdir', workdir_case(lambda d: ''), '--workdir')
  add('resume_other_seed', 'workdir', resume_case(TEACHER, '--config.seed=3'), 'seed')
  add('resume_other_trainer_config', 'workdir', resume_case(KD), 'workdir')
  add('resume_total_steps_below_saved', 'workdir', resume_case(TEACHER, '--config.total_steps=2'),
      'total_steps')

  # Multi-process start-up.
  add('dist_no_process_id', 'distributed', dist_case('--num_processes=2', *DIST), 'process_id')
  add('dist_no_coordinator', 'distributed',
      dist_case('--num_processes=2', '--process_id=0', *DIST), 'coordinator_address')
  add('dist_process_id_out_of_range', 'distributed', dist_case(
      '--num_processes=2', '--process_id=5', '--coordinator_address={addr}', *DIST), 'process_id')
  add('dist_num_processes_zero', 'distributed', dist_case(
      '--num_processes=0', '--process_id=0', '--coordinator_address={addr}', *DIST),
      'num_processes')
  add('dist_second_process_never_comes', 'distributed', dist_case(
      '--num_processes=2', '--process_id=0', '--coordinator_address={addr}', *DIST),
      'coordinator', f'{DIST_TIMEOUT_S} s')
  add('dist_client_without_coordinator', 'distributed', dist_case(
      '--num_processes=2', '--process_id=1', '--coordinator_address={addr}', *DIST), 'coordinator')
  add('dist_coordinator_port_in_use', 'distributed', dist_case(
      '--num_processes=2', '--process_id=0', '--coordinator_address={addr}', *DIST, occupy=True),
      'port|in use|address|bind')
  add('dist_address_without_port', 'distributed', dist_case(
      '--num_processes=2', '--process_id=0', '--coordinator_address=localhost', *DIST),
      'localhost')
  add('dist_cpu_collectives_typo', 'distributed', dist_case(
      '--num_processes=2', '--process_id=0', '--coordinator_address={addr}',
      '--cpu_collectives=glooo', f'--distributed_timeout_s={DIST_TIMEOUT_S}'), 'glooo')
  return c


# --------------------------------------------------------------------------------------------------
# Running one case


def snapshot(paths: list[str]) -> tuple[dict[str, str], set[str]]:
  """sha256 of every regular file under `paths`, and the directories there."""
  files, dirs = {}, set()
  for root in paths:
    if os.path.isfile(root):
      files[root] = _digest(root)
      continue
    for dirpath, _, names in os.walk(root):
      dirs.add(dirpath)
      for n in names:
        p = os.path.join(dirpath, n)
        if os.path.isfile(p) and not os.path.islink(p):
          files[p] = _digest(p)
  return files, dirs


def _digest(path: str) -> str:
  h = hashlib.sha256()
  with open(path, 'rb') as f:
    while chunk := f.read(1 << 20):
      h.update(chunk)
  return h.hexdigest()


@dataclasses.dataclass
class Result:
  case: Case
  cmd: list[str]
  exit: int | None          # None: hung (killed after HANG_TIMEOUT_S)
  traceback: bool
  damaged: list[str]        # changed or deleted pre-existing files
  added: list[str]          # new files in directories that existed before
  error_lines: list[str]
  output: str
  seconds: float

  @property
  def hang(self) -> bool:
    return self.exit is None

  @property
  def named(self) -> bool:
    if len(self.error_lines) != 1:
      return False
    line = self.error_lines[0].lower()
    return all(any(alt.lower() in line for alt in e.split('|')) for e in self.case.expect)

  @property
  def accepted(self) -> bool:
    """Exit 0 of a case whose value may be accepted by design."""
    return self.exit == 0 and self.case.by_design and not (self.traceback or self.damaged)

  def problems(self) -> list[str]:
    if self.accepted:
      return []
    out = []
    if self.hang:
      out.append('hang')
    elif self.exit == 0:
      out.append('exit0')
    if self.traceback:
      out.append('traceback')
    if self.damaged:
      out.append('damage')
    if not self.hang and self.exit != 0:
      if len(self.error_lines) != 1:
        out.append(f'{len(self.error_lines)} error lines')
      elif not self.named:
        out.append('unnamed')
    return out

  def message(self) -> str:
    if self.error_lines:
      return self.error_lines[0][len(ERROR_PREFIX):].strip()
    lines = [l for l in self.output.splitlines() if l.strip()]
    return lines[-1].strip() if lines else ''


def run_case(case: Case, fx: Fixtures, env: dict[str, str], cases_root: str) -> Result:
  d = os.path.join(cases_root, case.name)
  shutil.rmtree(d, ignore_errors=True)
  os.makedirs(d)
  prepared = case.prepare(fx, d)
  guarded = fx.guarded() + [d]
  before, dirs_before = snapshot(guarded)
  cmd = [sys.executable, 'launch.py', *prepared.args]
  t0 = time.perf_counter()
  proc = subprocess.Popen(cmd, cwd=REPO, env={**env, **prepared.env}, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, errors='replace',
                          start_new_session=True)
  try:
    output, _ = proc.communicate(timeout=HANG_TIMEOUT_S)
    rc: int | None = proc.returncode
  except subprocess.TimeoutExpired:
    os.killpg(proc.pid, signal.SIGKILL)   # its own session: the launch and anything it started
    output, _ = proc.communicate()
    rc = None
  finally:
    if prepared.hold is not None:
      prepared.hold.close()
  seconds = time.perf_counter() - t0
  after, _ = snapshot(guarded)
  damaged = sorted(p for p, h in before.items() if after.get(p) != h)
  added = sorted(p for p in after if p not in before and os.path.dirname(p) in dirs_before)
  with open(os.path.join(d, 'output.log'), 'w') as f:   # after the snapshot: not a new file
    f.write(' '.join(cmd) + f'\nexit: {rc}\n' + output)
  return Result(case, cmd, rc, TRACEBACK in output, damaged, added,
                [l for l in output.splitlines() if l.startswith(ERROR_PREFIX)], output, seconds)


# --------------------------------------------------------------------------------------------------
# Report


def print_table(results: list[Result]) -> None:
  w = max(len(r.case.name) for r in results)
  header = (f"{'case':<{w}} | exit | traceback? | hang? | damage? | {'verdict':<18} | "
            'message (first 100 chars)')
  print('\n' + header + '\n' + '-' * len(header))
  for r in results:
    problems = r.problems()
    verdict = 'by design (exit 0)' if r.accepted else ('ok' if not problems else
                                                       'FAIL: ' + ','.join(problems))
    exit_text = 'hang' if r.hang else str(r.exit)
    print(f'{r.case.name:<{w}} | {exit_text:>4} | {"yes" if r.traceback else "no":<10} | '
          f'{"yes" if r.hang else "no":<5} | {"yes" if r.damaged else "no":<7} | {verdict:<18} | '
          f'{r.message()[:100]}')
  for r in results:
    if r.added:
      print(f'  note: {r.case.name} wrote {len(r.added)} new file(s) into existing dirs: '
            f'{", ".join(r.added[:3])}')
    if r.damaged:
      print(f'  damage: {r.case.name}: {", ".join(r.damaged[:5])}')


def summary(results: list[Result]) -> str:
  return (f'{len(results)} bad inputs: {sum(r.traceback for r in results)} tracebacks, '
          f'{sum(r.hang for r in results)} hangs, {sum(bool(r.damaged) for r in results)} damaged, '
          f'{sum(r.exit == 0 and not r.accepted for r in results)} exit-0')


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split('\n', 1)[0])
  p.add_argument('--keep', action='store_true', help='keep the temp root (fixtures, case dirs, logs)')
  p.add_argument('--root', help='use this dir (kept); reuses the data dir and teachers built there')
  p.add_argument('--only', help='run only the cases whose name contains this substring '
                 '(comma-separated: any of them)')
  p.add_argument('--list', action='store_true', help='list the cases and exit')
  return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
  args = parse_args(argv)
  selected = cases()
  if args.only:
    subs = [s for s in args.only.split(',') if s]
    selected = [c for c in selected if any(s in c.name for s in subs)]
  if args.list:
    for c in selected:
      print(f'{c.category:<12} {c.name}{"  (by design)" if c.by_design else ""}')
    print(f'{len(selected)} cases')
    return 0
  if not selected:
    print(f'no case matches --only={args.only!r}', file=sys.stderr)
    return 2
  keep = args.keep or bool(args.root)
  root = os.path.abspath(args.root) if args.root else tempfile.mkdtemp(prefix='kd_bad_inputs_')
  os.makedirs(root, exist_ok=True)
  env = child_env(root, compile_cache=True)
  t0 = time.perf_counter()
  results: list[Result] = []
  try:
    fx = build_fixtures(root, env)
    log(f'fixtures ready in {time.perf_counter() - t0:.0f} s; {len(selected)} cases under {root}')
    for i, case in enumerate(selected, 1):
      r = run_case(case, fx, env, os.path.join(root, 'cases'))
      results.append(r)
      verdict = ','.join(r.problems()) or 'ok'
      log(f'{i}/{len(selected)} {case.name}: exit {r.exit}, {r.seconds:.0f} s, {verdict}')
  finally:
    if not keep:
      shutil.rmtree(root, ignore_errors=True)
  print_table(results)
  failed = [r for r in results if r.problems()]
  print(f'\n{summary(results)}')
  print(f'{len(failed)} of {len(results)} cases fail; '
        f'{sum(r.accepted for r in results)} accepted by design; total {time.perf_counter() - t0:.0f} s'
        + (f'; files in {root}' if keep else ''), flush=True)
  return 1 if failed else 0


if __name__ == '__main__':
  sys.exit(main())
