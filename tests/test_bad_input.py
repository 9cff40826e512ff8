"""Bad input → one clear message naming the problem and the fix; nothing on disk damaged.

In-process trainer calls for config, path, dataset and checkpoint errors; launch.py subprocesses only
where the behaviour is the process's (flag parsing, config files, distributed start-up).
"""
import glob
import json
import os
import shutil
import socket
import subprocess
import sys

import ml_collections
import pytest

from conftest import REPO, tiny_config
from kd_jax import errors
from kd_jax.data import fashion_mnist
from kd_jax.trainers import classification, gan


def _snapshot(root):
  out = {}
  for dirpath, _, files in os.walk(root):
    for f in files:
      p = os.path.join(dirpath, f)
      out[p] = open(p, 'rb').read()
  return out


def test_missing_teacher_checkpoint(tiny_data_dir, tmp_path):
  config = tiny_config('fashion_mnist/kd_student.py', tiny_data_dir,
                 **{'teacher.checkpoint': str(tmp_path / 'nope')})
  with pytest.raises(errors.CheckpointError, match='does not exist.*train the teacher first'):
    classification.train_and_evaluate(config, str(tmp_path / 'w'))


def test_teacher_model_config_not_matching_checkpoint(teacher_workdir, tiny_data_dir, tmp_path):
  before = _snapshot(teacher_workdir)
  config = tiny_config('fashion_mnist/kd_student.py', tiny_data_dir,
                 **{'teacher.checkpoint': teacher_workdir})
  model = dict(config.teacher.model)
  model['width'] = int(model.get('width', 16)) * 2
  config.teacher.model = model
  with pytest.raises(errors.CheckpointError, match='does not match the teacher model config.*'
                     'set config.teacher.model'):
    classification.train_and_evaluate(config, str(tmp_path / 'w'))
  assert _snapshot(teacher_workdir) == before


@pytest.mark.parametrize('field,value,match', [
    ('data.name', 'no_such_dataset', "unknown dataset 'no_such_dataset'"),
    ('model', {'name': 'no_such_model'}, "unknown model 'no_such_model'"),
    ('losses', [('no_such_loss', 1.0, {})], "unknown loss 'no_such_loss'"),
])
def test_unknown_names(tiny_data_dir, tmp_path, field, value, match):
  config = tiny_config('fashion_mnist/teacher.py', tiny_data_dir)
  config.unlock()
  target = config
  *path, last = field.split('.')
  for p in path:
    target = target[p]
  target[last] = value
  with pytest.raises(errors.ConfigError, match=match):
    classification.train_and_evaluate(config, str(tmp_path))


def test_misspelled_field_in_config(tiny_data_dir, tmp_path):
  config = tiny_config('fashion_mnist/teacher.py', tiny_data_dir)
  config.optimizer.learning_rte = 0.1
  with pytest.raises(errors.ConfigError, match=r"config.optimizer.learning_rte'.*learning_rate"):
    classification.train_and_evaluate(config, str(tmp_path))


def test_workdir_is_a_file(tiny_data_dir, tmp_path):
  path = tmp_path / 'file'
  path.write_text('keep me')
  with pytest.raises(errors.ConfigError, match='is a file'):
    classification.train_and_evaluate(tiny_config('fashion_mnist/teacher.py', tiny_data_dir), str(path))
  assert path.read_text() == 'keep me'


def test_existing_checkpoint_of_another_model_is_not_overwritten(teacher_workdir, tiny_data_dir):
  before = _snapshot(teacher_workdir)
  # A different student model launched into the teacher's workdir must refuse, not overwrite.
  config = tiny_config('fashion_mnist/kd_student.py', tiny_data_dir,
                 **{'teacher.checkpoint': teacher_workdir})
  with pytest.raises(errors.CheckpointError, match='new --workdir'):
    classification.train_and_evaluate(config, teacher_workdir)
  after = _snapshot(teacher_workdir)
  assert {k: v for k, v in after.items() if 'tfevents' not in k} == {
      k: v for k, v in before.items() if 'tfevents' not in k}


def _launch(*args):
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=1')
  return subprocess.run([sys.executable, os.path.join(REPO, 'launch.py'), *args],
                        capture_output=True, text=True, env=env, cwd=REPO, timeout=300)


def test_launch_reports_one_line_and_nonzero_exit(tmp_path):
  proc = _launch('--config', 'configs/fashion_mnist/kd_student.py:tiny',
                 f'--workdir={tmp_path / "w"}', f'--config.teacher.checkpoint={tmp_path / "nope"}')
  assert proc.returncode == 2
  lines = [l for l in proc.stderr.splitlines() if l.startswith('kd_jax: error:')]
  assert len(lines) == 1 and 'does not exist' in lines[0]


def test_misspelled_override_fails_with_one_line_and_no_traceback(tmp_path):
  proc = _launch('--config', 'configs/fashion_mnist/kd_student.py:tiny',
                 f'--workdir={tmp_path / "w"}', '--config.totl_steps=3')
  assert proc.returncode != 0
  assert 'Traceback' not in proc.stderr
  lines = [l for l in proc.stderr.splitlines() if 'totl_steps' in l]
  assert len(lines) == 1 and 'total_steps' in lines[0], proc.stderr[-3000:]
  assert not os.path.exists(tmp_path / 'w')


# --- helpers ----------------------------------------------------------------------------------------

def _with(config, **fields):
  """A copy of `config` with dotted fields set to values of any type (ConfigDict would refuse a str
  where an int was, so the copy is rebuilt from plain dicts, as a config file could build it)."""
  d = config.to_dict()
  for dotted, value in fields.items():
    *path, last = dotted.split('.')
    target = d
    for part in path:
      target = target[part]
    target[last] = value
  return ml_collections.ConfigDict(d)


def _one_error_line(proc):
  lines = [l for l in proc.stderr.splitlines() if l.startswith('kd_jax: error:')]
  assert proc.returncode == 2 and len(lines) == 1 and 'Traceback' not in proc.stderr, (
      proc.returncode, proc.stderr[-3000:])
  return lines[0]


def _copy_run(src, dst):
  shutil.copytree(src, dst)
  step = max(int(os.path.basename(p)) for p in glob.glob(f'{dst}/checkpoints/*')
             if os.path.basename(p).isdigit())
  return str(dst), f'{dst}/checkpoints/{step}'


# --- config values ----------------------------------------------------------------------------------

@pytest.mark.parametrize('fields,match', [
    ({'data.batch_size': '32'}, r"config.data.batch_size='32' is a str, but it must be an int"),
    ({'total_steps': 5.0}, r'config.total_steps=5.0 is a float, but it must be an int'),
    ({'data.augment': 1}, r'config.data.augment=1 is an int, but it must be a bool'),
    ({'optimizer.learning_rate': '1e-3'}, r"learning_rate='1e-3' is a str, but it must be a number"),
    ({'teacher.checkpoint': 5}, r'config.teacher.checkpoint=5 is an int, but it must be a str'),
    ({'crd.feat_dim': None}, r'config.crd.feat_dim=None is a NoneType, but it must be an int'),
    ({'data': 5}, r'config.data=5 must be a group of fields'),
    ({'data.batch_size': -32}, r'config.data.batch_size: global batch size -32 must be a positive'),
    ({'data.batch_size': 0}, r'config.data.batch_size: global batch size 0 must be a positive'),
    ({'data.eval_batch_size': -8}, r'config.data.eval_batch_size: .* must be a positive integer'),
])
def test_wrong_type_or_value_names_the_field(tiny_data_dir, tmp_path, fields, match):
  config = _with(tiny_config('fashion_mnist/teacher.py', tiny_data_dir), **fields)
  with pytest.raises(errors.ConfigError, match=match):
    classification.train_and_evaluate(config, str(tmp_path / 'w'))
  assert not os.path.exists(tmp_path / 'w')  # failed before the workdir was made


@pytest.mark.parametrize('fields,match', [
    ({'optimizer.learning_rate': -0.1}, r'config.optimizer.learning_rate=-0.1 must be a finite '
                                        r'number > 0'),
    ({'optimizer.learning_rate': float('nan')}, r'learning_rate=nan must be a finite number'),
    ({'optimizer.warmup_steps': -10}, r'config.optimizer.warmup_steps=-10 must be an integer >= 0'),
    ({'data.crop_padding': -2}, r'config.data.crop_padding=-2 must be an integer >= 0'),
    ({'data.mixup_alpha': -1.0, 'losses': [('kd', 1.0, {'temperature': 1.0})]},
     r'config.data.mixup_alpha=-1.0 must be a number >= 0'),
    ({'model.num_classes': 5}, r"config.model gives 5 logits but 'fashion_mnist' has 10 classes; "
                               r'set config.model.num_classes=10'),
])
def test_values_that_would_train_wrongly_are_refused(tiny_data_dir, teacher_workdir, tmp_path,
                                                     fields, match):
  """Each of these used to train (a negative rate ascends the loss), end in a traceback from inside
  the step's trace, or stop at step 1 as "diverged" with the wrong advice."""
  config = _with(tiny_config('fashion_mnist/kd_student.py', tiny_data_dir,
                             **{'teacher.checkpoint': teacher_workdir}), **fields)
  with pytest.raises(errors.ConfigError, match=match):
    classification.train_and_evaluate(config, str(tmp_path / 'w'))
  assert not glob.glob(str(tmp_path / 'w' / '*'))  # nothing written


def test_a_float_field_accepts_an_int(tiny_data_dir):
  from kd_jax import config_utils  # pylint: disable=import-outside-toplevel
  config = _with(tiny_config('fashion_mnist/teacher.py', tiny_data_dir),
                 **{'optimizer.learning_rate': 1, 'data.cache_in_memory': None})
  config_utils.check_fields(config, classification.default_config())


def test_gan_eval_count_must_be_positive(tiny_data_dir, tmp_path):
  config = _with(tiny_config('fashion_mnist/gan_teacher.py', tiny_data_dir),
                 **{'eval.batch_size': 0})
  with pytest.raises(errors.ConfigError, match=r'config.eval.batch_size=0 must be a positive'):
    gan.train_and_evaluate(config, str(tmp_path))


# --- workdir ----------------------------------------------------------------------------------------

@pytest.mark.parametrize('make,match', [
    (lambda tmp: '/proc/kd_jax_no/x', r"--workdir='/proc/kd_jax_no/x' cannot be created"),
    (lambda tmp: str(tmp / 'file' / 'x'), r'cannot be created \(.*file is a file\)'),
    (lambda tmp: '', r'--workdir is empty'),
])
def test_uncreatable_workdir(tiny_data_dir, tmp_path, make, match):
  (tmp_path / 'file').write_text('keep me')
  with pytest.raises(errors.ConfigError, match=match):
    classification.train_and_evaluate(tiny_config('fashion_mnist/teacher.py', tiny_data_dir),
                                      make(tmp_path))
  assert (tmp_path / 'file').read_text() == 'keep me'


# --- data -------------------------------------------------------------------------------------------

def _junk_dir(tmp):
  (tmp / 'junk' / 'photos').mkdir(parents=True)
  (tmp / 'junk' / 'notes.txt').write_text('keep me')
  (tmp / 'junk' / 'photos' / 'a.jpg').write_bytes(os.urandom(64))
  return str(tmp / 'junk')


@pytest.mark.parametrize('make,match', [
    (lambda tmp: (tmp.joinpath('f').write_text('keep me'), str(tmp / 'f'))[1],
     r"config.data: data_dir='.*f' is a file, not a directory"),
    (_junk_dir, r"holds no TFDS datasets but other files \(notes.txt, photos\)"),
    (lambda tmp: (tmp.joinpath('f').write_text('keep me'), str(tmp / 'f' / 'd'))[1],
     r'cannot be created or written'),
])
def test_garbage_data_dir(tiny_data_dir, tmp_path, make, match):
  data_dir = make(tmp_path)
  before = _snapshot(tmp_path)
  config = tiny_config('fashion_mnist/teacher.py', tiny_data_dir, **{'data.data_dir': data_dir})
  with pytest.raises(errors.ConfigError, match=match):
    classification.train_and_evaluate(config, str(tmp_path / 'w'))
  after = _snapshot(tmp_path)
  assert {k: v for k, v in after.items() if '/w/' not in k} == before


def test_truncated_idx_gz_names_the_file_and_builds_nothing(tiny_data_dir, tmp_path, monkeypatch):
  idx = tmp_path / 'idx'
  shutil.copytree(os.path.join(os.path.dirname(tiny_data_dir), 'idx'), idx)
  victim = idx / 't10k-labels-idx1-ubyte.gz'
  victim.write_bytes(victim.read_bytes()[:len(victim.read_bytes()) // 2])
  monkeypatch.setenv(fashion_mnist.IDX_DIR_ENV, str(idx))
  data_dir = tmp_path / 'tfds'
  config = tiny_config('fashion_mnist/teacher.py', str(data_dir))
  with pytest.raises(errors.DatasetUnavailableError,
                     match=r't10k-labels-idx1-ubyte.gz is truncated or corrupt.*reinstall'):
    classification.train_and_evaluate(config, str(tmp_path / 'w'))
  assert not glob.glob(f'{data_dir}/fashion_mnist/*')  # nothing a later run could take as built


def test_explicit_idx_dir_without_files_does_not_try_the_download(tmp_path, monkeypatch):
  from kd_jax.data import sources  # pylint: disable=import-outside-toplevel
  monkeypatch.setenv(fashion_mnist.IDX_DIR_ENV, str(tmp_path / 'nowhere'))
  monkeypatch.setattr(sources, '_network_reachable', lambda *a, **k: pytest.fail('tried download'))
  with pytest.raises(errors.DatasetUnavailableError, match=r'IDX files .* not found in .*nowhere'):
    sources.get_source('fashion_mnist', 'train', data_dir=str(tmp_path / 'tfds'))


@pytest.mark.parametrize('damage,match', [
    ('*-train.array_record*', r"prepared dataset 'fashion_mnist' in .*3.0.1 cannot be read"),
    ('dataset_info.json', r"prepared dataset 'fashion_mnist' in .*fashion_mnist cannot be read"),
])
def test_damaged_prepared_dataset(tiny_data_dir, tmp_path, damage, match):
  data_dir = tmp_path / 'tfds'
  shutil.copytree(tiny_data_dir, data_dir)
  for p in glob.glob(f'{data_dir}/fashion_mnist/*/{damage}'):
    with open(p, 'r+b') as f:
      f.truncate(os.path.getsize(p) // 2)
  before = _snapshot(data_dir)
  config = tiny_config('fashion_mnist/teacher.py', str(data_dir))
  with pytest.raises(errors.DatasetUnavailableError, match=match + r'.*delete .* or pass another'):
    classification.train_and_evaluate(config, str(tmp_path / 'w'))
  assert _snapshot(data_dir) == before  # reported, never deleted or rebuilt over


# --- teacher checkpoints ----------------------------------------------------------------------------

def _garbage_meta(step_dir):
  with open(f'{step_dir}/meta/metadata', 'w') as f:
    f.write('{not json')


def _list_meta(step_dir):
  with open(f'{step_dir}/meta/metadata', 'w') as f:
    json.dump([1, 2], f)


def _truncate_arrays(step_dir):
  # Every data file: OCDBT may keep small arrays inline in the top-level B-tree (export/d/) or in
  # the process's files, depending on how orbax's merge ran, so damaging one dir alone may miss all.
  for p in glob.glob(f'{step_dir}/export/ocdbt.process_0/d/*') + glob.glob(f'{step_dir}/export/d/*'):
    with open(p, 'r+b') as f:
      f.truncate(os.path.getsize(p) // 2)


def _truncate_index(step_dir):
  for p in glob.glob(f'{step_dir}/export/d/*'):
    with open(p, 'r+b') as f:
      f.truncate(os.path.getsize(p) // 2)


@pytest.mark.parametrize('damage,match', [
    (_garbage_meta, r'cannot read .*/meta \(Expecting property name'),
    (_list_meta, r"/meta is not a kd_jax run's metadata .*found \[1, 2\]"),
    (_truncate_arrays, r'exported weights in .*/export are damaged \((array model\.params\..* '
                       r'cannot be read|its index cannot be read)'),
    (_truncate_index, r'exported weights in .*/export are damaged'),
    (lambda d: shutil.rmtree(f'{d}/export'), r'export are damaged \(the directory is missing'),
])
def test_damaged_teacher_checkpoint(teacher_workdir, tiny_data_dir, tmp_path, capfd, damage, match):
  teacher, step_dir = _copy_run(teacher_workdir, tmp_path / 'teacher')
  damage(step_dir)
  before = _snapshot(teacher)
  config = tiny_config('fashion_mnist/kd_student.py', tiny_data_dir,
                       **{'teacher.checkpoint': teacher})
  with pytest.raises(errors.CheckpointError, match=r"config.teacher.checkpoint='.*teacher'.*" + match):
    classification.train_and_evaluate(config, str(tmp_path / 'w'))
  assert _snapshot(teacher) == before
  assert 'Traceback' not in capfd.readouterr().err  # no orbax reads left in flight


@pytest.mark.parametrize('make,match', [
    (lambda tmp: (tmp.joinpath('f').write_text('x'), str(tmp / 'f'))[1],
     r"config.teacher.checkpoint='.*f' is a file, not a run's --workdir"),
    (lambda tmp: (tmp.joinpath('empty').mkdir(), str(tmp / 'empty'))[1],
     r'holds no kd_jax checkpoint \(no finished checkpoints/<step>; it is empty\)'),
])
def test_teacher_checkpoint_not_a_run(tiny_data_dir, tmp_path, make, match):
  config = tiny_config('fashion_mnist/kd_student.py', tiny_data_dir,
                       **{'teacher.checkpoint': make(tmp_path)})
  with pytest.raises(errors.CheckpointError, match=match):
    classification.train_and_evaluate(config, str(tmp_path / 'w'))


def test_gan_run_as_classifier_teacher_and_eval_classifier_names_the_field(
    teacher_workdir, tiny_data_dir, tmp_path):
  # A GAN run's meta (only the meta is read before these errors), without training a GAN here.
  fake_gan, step_dir = _copy_run(teacher_workdir, tmp_path / 'gan')
  with open(f'{step_dir}/meta/metadata', 'w') as f:
    json.dump({'trainer': 'gan', 'exported': {'generator': {'name': 'dcgan_generator'},
                                              'discriminator': {'name': 'dcgan_discriminator'}}}, f)
  config = tiny_config('fashion_mnist/kd_student.py', tiny_data_dir,
                       **{'teacher.checkpoint': fake_gan})
  with pytest.raises(errors.CheckpointError, match=r"config.teacher.checkpoint=.* is a 'gan' run "
                     r".*not a 'model'; point it at the --workdir of a classifier run"):
    classification.train_and_evaluate(config, str(tmp_path / 'w1'))
  config = tiny_config('fashion_mnist/gan_teacher.py', tiny_data_dir,
                       **{'eval.classifier_checkpoint': fake_gan})
  # Reported before training, under the field the user set.
  with pytest.raises(errors.CheckpointError,
                     match=r"^config.eval.classifier_checkpoint='.*gan' is a 'gan' run"):
    gan.train_and_evaluate(config, str(tmp_path / 'w2'))
  assert not glob.glob(str(tmp_path / 'w2' / 'checkpoints' / '*'))


def test_eval_feature_layer_that_the_classifier_lacks(teacher_workdir, tiny_data_dir, tmp_path):
  config = tiny_config('fashion_mnist/gan_teacher.py', tiny_data_dir,
                       **{'eval.classifier_checkpoint': teacher_workdir,
                          'eval.feature_layer': 'no_such_layer'})
  with pytest.raises(errors.ConfigError, match=r'^config.eval.feature_layer: .*no_such_layer'):
    gan.train_and_evaluate(config, str(tmp_path))
  assert not glob.glob(str(tmp_path / 'checkpoints' / '*'))


# --- launch.py: flags, config files, processes ------------------------------------------------------

def _write(tmp_path, name, text):
  path = tmp_path / name
  path.write_text(text)
  return str(path)


@pytest.mark.parametrize('args,expected', [
    (['--config.model.widht=3'],
     'unknown config field --config.model.widht; did you mean --config.model.width?'),
    (['--config.total_steps=abc'],
     "--config.total_steps='abc' is not an int; pass an int, e.g. --config.total_steps=6"),
    (['--config.data.augment=maybe'], "--config.data.augment='maybe' is not a bool"),
    (['--config=configs/fashion_mnist/kd_studnt.py'],
     'no such file; did you mean configs/fashion_mnist/kd_student.py?'),
    (['--config=configs/fashion_mnist/kd_student.py:nosuch'],
     "get_config('nosuch') raised ValueError: unknown config argument 'nosuch'; use nothing, "
     "':demo' or ':tiny'."),
    (['--config={tmp}/syntax.py'], 'syntax.py: SyntaxError at line 2'),
    (['--config={tmp}/syntax.py', '--config.seed=1'], 'syntax.py: SyntaxError at line 2'),
    (['--num_processes=2'], '--num_processes=2 needs --process_id'),
    (['--num_processes=2', '--process_id=0'], '--num_processes=2 needs --coordinator_address'),
])
def test_launch_flag_and_config_file_errors(tmp_path, args, expected):
  _write(tmp_path, 'syntax.py', 'import ml_collections\ndef get_config(arg=None)\n  return 1\n')
  args = [a.format(tmp=tmp_path) for a in args]
  if not any(a.startswith('--config=') for a in args):
    args = ['--config=configs/fashion_mnist/kd_student.py:tiny'] + args
  line = _one_error_line(_launch(*args, f'--workdir={tmp_path / "w"}'))
  assert expected in line, line
  assert not os.path.exists(tmp_path / 'w')


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def test_second_process_that_never_comes_times_out_with_one_line(tiny_data_dir, tmp_path):
  address = f'127.0.0.1:{_free_port()}'
  proc = _launch('--config=configs/fashion_mnist/teacher.py:tiny', f'--workdir={tmp_path / "w"}',
                 f'--config.data.data_dir={tiny_data_dir}', '--num_processes=2', '--process_id=0',
                 f'--coordinator_address={address}', '--cpu_collectives=gloo',
                 '--distributed_timeout_s=5')
  line = _one_error_line(proc)
  assert f'process ids other than 0 of 0..1 did not connect to the coordinator at {address} ' \
         'within 5 s' in line, line
