"""kd_jax against PyTorch on the same networks and steps (issue 13): classifier KD, classifier
from scratch, data-free L1 generator distillation, the DCGAN teacher (G+D with R1), the EDM
diffusion teacher's denoising step and its output distillation into a narrower U-Net.

For each workload: kd_jax builds and initialises its networks, saves the weights, a fixed batch and
its eval-mode logits to an .npz; `torch_side.py` (run by `--torch_python`, a Python with torch;
kd_jax never imports it) rebuilds the same networks in PyTorch, loads those weights, checks the
parameter counts and logits against kd_jax's, and times the same step (SGD momentum 0.9, lr 0.01;
KD: 0.5·CE + 0.5·T²·KL with T = 2, teacher frozen). kd_jax's step is its own
`classification.train_step`, jitted with the state donated. Runs alternate kd_jax / eager /
compile, `--reps` times; medians are printed with the ratios. Both sides use `--threads` threads.
Each side runs in its own process, so its peak resident memory (`ru_maxrss`) is that workload's
alone; the resident memory right after the imports (the frameworks' own) is printed beside it, and
on an accelerator kd_jax's device peak (`memory_stats()['peak_bytes_in_use']`) too.

  .venv/bin/python benchmarks/bench_vs_pytorch.py --torch_python /path/to/torch-venv/bin/python \
      [--reps 3] [--steps 30] [--threads 2] [--no_compile]
"""
import argparse
import functools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

WORKLOADS = {'classifier_kd': dict(width_teacher=16, width_student=16, batch=128),
             'classifier_scratch': dict(width_teacher=0, width_student=16, batch=128),
             'generator_l1': dict(width_teacher=32, width_student=4, batch=64),
             'gan_teacher': dict(width_teacher=32, width_student=0, batch=64),
             # The Fashion-MNIST EDM configs' U-Nets (configs/fashion_mnist/common.py) at batch 64.
             'edm_teacher': dict(teacher=None, student=dict(channels=16, channel_mult=(1, 2, 4)),
                                 batch=64),
             'edm_compress': dict(teacher=dict(channels=16, channel_mult=(1, 2, 4)),
                                  student=dict(channels=8, channel_mult=(1, 2, 2)), batch=64)}


def _steps_per_sec(step, state, tree, batch, steps, profile_dir=''):
  """kd_jax's rate: 3 warm-up steps (compilation), then `steps` timed ones; with `profile_dir`,
  `steps` more under `jax.profiler.trace`, summarised to stderr."""
  import jax  # pylint: disable=import-outside-toplevel
  key = jax.random.key(0)
  for _ in range(3):
    state, m = step(state, tree, batch, key)
  jax.block_until_ready(m)
  t0 = time.perf_counter()
  for _ in range(steps):
    state, m = step(state, tree, batch, key)
  jax.block_until_ready((state, m))
  rate = steps / (time.perf_counter() - t0)
  if profile_dir:
    with jax.profiler.trace(profile_dir):
      for _ in range(steps):
        state, m = step(state, tree, batch, key)
      jax.block_until_ready((state, m))
    _print_profile(profile_dir, steps)
  return rate


def _print_profile(trace_dir, steps, top=25):
  """XLA:CPU's own per-thunk events from the trace, summed by HLO op name, per step (to stderr).

  The events of XLA's thunk executor are named after the HLO instructions they run (fusions,
  convolutions, custom calls), so this is the step's time split by the ops XLA emitted.
  """
  import glob  # pylint: disable=import-outside-toplevel
  import collections  # pylint: disable=import-outside-toplevel
  from jax._src.lib import _profile_data  # pylint: disable=import-outside-toplevel
  path = sorted(glob.glob(os.path.join(trace_dir, '**', '*.xplane.pb'), recursive=True))[-1]
  data = _profile_data.ProfileData.from_file(path)
  per_op, per_kind, busy = collections.Counter(), collections.Counter(), 0
  for plane in data.planes:
    for line in plane.lines:
      if 'XLAEigen' not in line.name:  # XLA's intra-op worker threads run the thunks
        continue
      for ev in line.events:
        if ev.name.startswith('ThunkExecutor'):
          continue
        per_op[ev.name] += ev.duration_ns
        per_kind[ev.name.split('.')[0]] += ev.duration_ns
        busy += ev.duration_ns
  ms = lambda ns: f'{ns / steps / 1e6:8.2f} ms'
  print(f'profile {path}: thread-ms per step in XLA ops: {ms(busy)}; by kind:', file=sys.stderr)
  for name, ns in per_kind.most_common(12):
    print(f'  {ms(ns)}  {name}', file=sys.stderr)
  print(f'top {top} ops:', file=sys.stderr)
  for name, ns in per_op.most_common(top):
    print(f'  {ms(ns)}  {name}', file=sys.stderr)


def _jit(fn, **static_kwargs):
  """`fn` jitted with `static_kwargs` bound: the set-up runs jitted, as the trainers' init does
  (`trainers/loop.py`). Its memory (mostly XLA compiling it: the EDM set-up reached 1.3 GiB,
  op by op or jitted alike) is reported apart from the step's (`worker`)."""
  import jax  # pylint: disable=import-outside-toplevel
  return jax.jit(functools.partial(fn, **static_kwargs))


def _create(params, model_state, tx):
  """`TrainState.create` jitted (see `_jit`)."""
  from kd_jax.train_state import TrainState  # pylint: disable=import-outside-toplevel
  return _jit(lambda p, s: TrainState.create(params=p, model_state=s, tx=tx))(params, model_state)


def _own_copy(tree):
  """A copy of `tree` in new buffers (jitted, see `_jit`), for state that the step donates."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  return _jit(lambda t: jax.tree.map(jnp.copy, t))(tree)


def _flat(prefix, variables):
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  out = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(variables['params'])[0]:
    out[prefix + '/' + '/'.join(str(p.key) for p in path)] = np.asarray(leaf)
  for path, leaf in jax.tree_util.tree_flatten_with_path(variables.get('batch_stats', {}))[0]:
    out[prefix + '/stats/' + '/'.join(str(p.key) for p in path)] = np.asarray(leaf)
  return out


def generator_side(cfg, npz):
  """Data-free L1 distillation DCGAN w32 → w4 (latent 64, 28 px): kd_jax's generator_distill step."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  import optax  # pylint: disable=import-outside-toplevel
  from kd_jax import losses, models  # pylint: disable=import-outside-toplevel
  from kd_jax.distill import core  # pylint: disable=import-outside-toplevel
  from kd_jax.metrics import cost  # pylint: disable=import-outside-toplevel
  from kd_jax.trainers import generator_distill  # pylint: disable=import-outside-toplevel
  gen = lambda w: models.get('dcgan_generator', latent_dim=64, width=w, resolution=28, channels=1)
  z0 = jnp.zeros((1, 64))
  t_mod = gen(cfg['width_teacher'])
  t_vars = _jit(t_mod.init, train=False)(jax.random.key(1), z0, None)
  teacher = core.Frozen(t_mod, t_vars)
  composite = losses.compose([('l1', 1.0, {})])
  d = core.build(gen(cfg['width_student']), [teacher], composite.required_keys, output='images',
                 example=z0, call_kwargs={'labels': None})
  spec = generator_distill.Spec(d, composite, latent_dim=64)
  params, model_state = _jit(d.init, labels=None)(jax.random.key(0), z0)
  s_vars = {'params': params['student'], **model_state['student']}
  z = np.random.default_rng(0).normal(size=(8, 64)).astype(np.float32)
  arrays = {'width_student': cfg['width_student'], 'width_teacher': cfg['width_teacher'],
            'batch': cfg['batch'], 'z': z,
            'student_logits': np.asarray(_jit(d.student.apply, train=False)(s_vars, z, None)),
            'teacher_logits': np.asarray(_jit(t_mod.apply, train=False)(t_vars, z, None)),
            'kd_jax_student_params': cost.param_count(params['student']),
            'kd_jax_teacher_params': cost.param_count(t_vars['params'])}
  arrays.update(_flat('teacher', t_vars))
  arrays.update(_flat('student', s_vars))
  np.savez(npz, **{k: np.asarray(v) for k, v in arrays.items()})
  state = generator_distill.DistillState(
      _create(params, model_state, optax.sgd(0.01, momentum=0.9)), None)
  tree = d.teacher_tree([teacher])
  batch = {'image': jnp.zeros((cfg['batch'], 28, 28, 1), jnp.uint8),
           'label': jnp.zeros((cfg['batch'],), jnp.int32)}
  step = jax.jit(functools.partial(generator_distill.train_step, spec=spec), donate_argnums=(0,))
  return step, state, tree, batch


def gan_side(cfg, npz):
  """DCGAN G+D width 32 with R1 (γ = 1, every step), Adam 2e-4 β=(0, 0.99): kd_jax's gan step.
  (The npz keys reuse 'student' for G and 'teacher' for D so the checks stay one code path.)"""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  import optax  # pylint: disable=import-outside-toplevel
  from kd_jax import models  # pylint: disable=import-outside-toplevel
  from kd_jax.data import augment  # pylint: disable=import-outside-toplevel
  from kd_jax.metrics import cost  # pylint: disable=import-outside-toplevel
  from kd_jax.trainers import gan  # pylint: disable=import-outside-toplevel
  w = cfg['width_teacher']
  g_mod = models.get('dcgan_generator', latent_dim=64, width=w, resolution=28, channels=1)
  d_mod = models.get('dcgan_discriminator', width=w)
  g_vars = _jit(g_mod.init, train=False)(jax.random.key(0), jnp.zeros((1, 64)), None)
  d_vars = _jit(d_mod.init, train=False)(jax.random.key(1), jnp.zeros((1, 28, 28, 1)), None)
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (cfg['batch'], 28, 28, 1)).astype(np.uint8)
  z = rng.normal(size=(8, 64)).astype(np.float32)
  real = np.asarray(augment.normalize(images))
  arrays = {'width_teacher': w, 'width_student': w, 'batch': cfg['batch'], 'z': z, 'images': real,
            'student_logits': np.asarray(_jit(g_mod.apply, train=False)(g_vars, z, None)),
            'teacher_logits': np.asarray(_jit(d_mod.apply, train=False)(d_vars, real[:8], None)),
            'kd_jax_student_params': cost.param_count(g_vars['params']),
            'kd_jax_teacher_params': cost.param_count(d_vars['params'])}
  arrays.update(_flat('generator', g_vars))
  arrays.update(_flat('discriminator', d_vars))
  np.savez(npz, **{k: np.asarray(v) for k, v in arrays.items()})
  tx = lambda: optax.adam(2e-4, b1=0.0, b2=0.99)
  g_ms = {k: v for k, v in g_vars.items() if k != 'params'}
  state = gan.GANState(g=_create(g_vars['params'], g_ms, tx()),
                       d=_create(d_vars['params'], {}, tx()),
                       g_ema=_own_copy({'params': g_vars['params'], **g_ms}))
  spec = gan.Spec(g_mod, d_mod, 64, r1_gamma=1.0, ema_decay=0.999)
  batch = {'image': jnp.asarray(images), 'label': jnp.zeros((cfg['batch'],), jnp.int32)}
  step = jax.jit(functools.partial(gan.train_step, spec=spec), donate_argnums=(0,))
  return step, state, {}, batch


def diffusion_side(cfg, npz):
  """EDM denoiser training (`edm_teacher`: target x) or output KD into a narrower U-Net
  (`edm_compress`: target D_t(x_σ; σ), teacher frozen): kd_jax's diffusion step, λ(σ)-weighted L2,
  Adam 1e-3, the student's EMA (0.999 after warm-up). Params are jittered away from their zero
  inits before saving, so the output check exercises every layer."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  import optax  # pylint: disable=import-outside-toplevel
  from kd_jax import losses, models  # pylint: disable=import-outside-toplevel
  from kd_jax.data import augment  # pylint: disable=import-outside-toplevel
  from kd_jax.distill import core  # pylint: disable=import-outside-toplevel
  from kd_jax.metrics import cost  # pylint: disable=import-outside-toplevel
  from kd_jax.trainers import diffusion  # pylint: disable=import-outside-toplevel
  unet = lambda arch: models.get('edm_unet', img_channels=1, num_blocks=1, **arch)
  x0, s0 = jnp.zeros((1, 28, 28, 1)), jnp.ones((1,))

  @functools.partial(jax.jit, static_argnums=1)
  def jittered(variables, seed):
    leaves, treedef = jax.tree.flatten(variables)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    return jax.tree.unflatten(treedef, [a + 0.05 * jax.random.normal(k, a.shape)
                                        for a, k in zip(leaves, keys)])
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (cfg['batch'], 28, 28, 1)).astype(np.uint8)
  x = np.asarray(augment.normalize(images[:8]))
  sigma = np.exp(rng.normal(-1.2, 1.2, 8)).astype(np.float32)
  arrays = {'batch': cfg['batch'], 'images': x, 'sigma': sigma,
            'student_arch': json.dumps(cfg['student']), 'teacher_arch': json.dumps(cfg['teacher'])}
  teachers, t_mod, target = [], None, {}
  if cfg['teacher']:
    t_mod = unet(cfg['teacher'])
    t_vars = jittered(_jit(t_mod.init)(jax.random.key(1), x0, s0), 1)
    teachers = [core.Frozen(t_mod, t_vars)]
    target = {'target_images': 'teacher_images'}
    arrays.update(_flat('teacher', t_vars))
    arrays['teacher_logits'] = np.asarray(_jit(t_mod.apply)(t_vars, x, sigma))
    arrays['kd_jax_teacher_params'] = cost.param_count(t_vars['params'])
  s_mod = unet(cfg['student'])
  composite = losses.compose([{'name': 'weighted_l2', 'weight': 1.0, 'inputs': target}])
  d = core.build(s_mod, teachers, composite.required_keys, output='images', example=x0,
                 call_kwargs={'sigma': s0, 'labels': None})
  params, model_state = _jit(d.init, labels=None)(jax.random.key(0), x0, sigma=s0)
  params = {**params, 'student': jittered(params['student'], 0)}
  arrays.update(_flat('student', {'params': params['student']}))
  arrays['student_logits'] = np.asarray(_jit(s_mod.apply)({'params': params['student']}, x, sigma))
  arrays['kd_jax_student_params'] = cost.param_count(params['student'])
  np.savez(npz, **{k: np.asarray(v) for k, v in arrays.items()})
  spec = diffusion.Spec('compress' if teachers else 'teacher', d, composite, t_mod, 0, 0.999)
  state = diffusion.DiffusionState(
      _create(params, model_state, optax.adam(1e-3)),
      ema=_own_copy(params['student']), target={}, fake={})
  batch = {'image': jnp.asarray(images), 'label': jnp.zeros((cfg['batch'],), jnp.int32)}
  step = jax.jit(functools.partial(diffusion.train_step, spec=spec), donate_argnums=(0,))
  return step, state, d.teacher_tree(teachers), batch


def kd_jax_side(name, cfg, npz):
  """Saves the weights/batch/logits for the torch side; returns kd_jax's (jitted step, state,
  teacher tree, batch) to time."""
  if name == 'generator_l1':
    return generator_side(cfg, npz)
  if name == 'gan_teacher':
    return gan_side(cfg, npz)
  if name.startswith('edm_'):
    return diffusion_side(cfg, npz)
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  import optax  # pylint: disable=import-outside-toplevel
  from kd_jax import losses, models  # pylint: disable=import-outside-toplevel
  from kd_jax.data import augment  # pylint: disable=import-outside-toplevel
  from kd_jax.distill import core  # pylint: disable=import-outside-toplevel
  from kd_jax.trainers import classification  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (cfg['batch'], 28, 28, 1)).astype(np.uint8)
  labels = rng.integers(0, 10, cfg['batch']).astype(np.int32)
  x0 = jnp.zeros((1, 28, 28, 1))
  student = models.get('small_cnn', num_classes=10, width=cfg['width_student'])
  teachers, terms = [], [('ce', 1.0, {})]
  arrays = {'width_student': cfg['width_student'], 'width_teacher': cfg['width_teacher'],
            'images': augment.normalize(images), 'labels': labels}
  if cfg['width_teacher']:
    t_mod = models.get('resnet20', num_classes=10, width=cfg['width_teacher'])
    t_vars = _jit(t_mod.init, train=False)(jax.random.key(1), x0)
    teachers = [core.Frozen(t_mod, t_vars)]
    terms = [('kd', 0.5, {'temperature': 2.0}), ('ce', 0.5, {})]
    arrays.update(_flat('teacher', t_vars))
    arrays['teacher_logits'] = np.asarray(_jit(t_mod.apply, train=False)(
        t_vars, jnp.asarray(arrays['images'])))
  composite = losses.compose(terms)
  d = core.build(student, teachers, composite.required_keys, output='logits', example=x0)
  spec = classification.Spec(d, (composite,), augment=False)
  params, model_state = _jit(d.init)(jax.random.key(0), x0)
  s_vars = {'params': params['student'], **model_state['student']}
  arrays.update(_flat('student', s_vars))
  arrays['student_logits'] = np.asarray(_jit(student.apply, train=False)(
      s_vars, jnp.asarray(arrays['images'])))
  from kd_jax.metrics import cost  # pylint: disable=import-outside-toplevel
  arrays['kd_jax_student_params'] = cost.param_count(params['student'])
  if teachers:
    arrays['kd_jax_teacher_params'] = cost.param_count(teachers[0].variables['params'])
  np.savez(npz, **{k: np.asarray(v) for k, v in arrays.items()})
  state = _create(params, model_state, optax.sgd(0.01, momentum=0.9))
  tree = d.teacher_tree(teachers)
  batch = {'image': jnp.asarray(images), 'label': jnp.asarray(labels)}
  step = jax.jit(functools.partial(classification.train_step, spec=spec), donate_argnums=(0,))
  return step, state, tree, batch


def _rss_mb() -> float:
  import resource  # pylint: disable=import-outside-toplevel
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def worker(name, npz, steps, profile_dir=''):
  """One kd_jax measurement in this process: JSON with step/s and memory on the last line."""
  import jax  # pylint: disable=import-outside-toplevel
  import kd_jax.trainers  # pylint: disable=import-outside-toplevel,unused-import
  base = _rss_mb()
  step, state, tree, batch = kd_jax_side(name, WORKLOADS[name], npz)
  setup = _rss_mb()
  # Compiled once, ahead of time, so XLA's buffer plan of the step (its temporaries: activations
  # kept for the backward, ...) comes from the executable that is timed.
  compiled = step.lower(state, tree, batch, jax.random.key(0)).compile()
  plan = compiled.memory_analysis()
  rate = _steps_per_sec(compiled, state, tree, batch, steps, profile_dir)
  stats = jax.devices()[0].memory_stats() or {}
  print(json.dumps({'steps_per_sec': rate, 'peak_rss_mb': _rss_mb(), 'import_rss_mb': base,
                    'setup_rss_mb': setup,
                    'xla_temp_mb': getattr(plan, 'temp_size_in_bytes', 0) / 2**20 or None,
                    'device_peak_mb': stats.get('peak_bytes_in_use', 0) / 2**20 or None}))


def _last_json(cmd):
  out = subprocess.run(cmd, capture_output=True, text=True, check=False)
  if out.returncode:
    raise SystemExit(f'{" ".join(cmd)} failed:\n{out.stderr[-3000:]}')
  return json.loads(out.stdout.strip().splitlines()[-1])


def _check_equal(name, res, npz):
  """The PyTorch networks are kd_jax's: same parameter counts, logits equal to 1e-4."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  a = np.load(npz)
  for who in ('student', 'teacher'):
    if f'{who}_params' not in res:
      continue
    if res[f'{who}_params'] != int(a[f'kd_jax_{who}_params']):
      raise SystemExit(f'{name}: {who} has {res[who + "_params"]} params in PyTorch but '
                       f'{int(a["kd_jax_" + who + "_params"])} in kd_jax')
    scale = float(np.abs(a[f'{who}_logits']).max())
    if res[f'{who}_max_abs_diff'] > 1e-4 * max(scale, 1.0):
      raise SystemExit(f'{name}: {who} logits differ by {res[who + "_max_abs_diff"]:.2e}')


def main():
  p = argparse.ArgumentParser()
  p.add_argument('--torch_python', default=os.environ.get('KD_JAX_TORCH_PYTHON', ''),
                 help='a Python with torch installed (default: $KD_JAX_TORCH_PYTHON)')
  p.add_argument('--reps', type=int, default=3)
  p.add_argument('--steps', type=int, default=30)
  p.add_argument('--threads', type=int, default=2)
  p.add_argument('--no_compile', action='store_true')
  p.add_argument('--only', default='')
  p.add_argument('--profile', default='', help='with --worker: trace dir; prints top XLA ops')
  p.add_argument('--worker', default='', help=argparse.SUPPRESS)  # one kd_jax measurement
  p.add_argument('--npz', default='', help=argparse.SUPPRESS)
  args = p.parse_args()
  if args.worker:
    worker(args.worker, args.npz, args.steps, args.profile)
    return
  if not args.torch_python:
    print('bench_vs_pytorch: skipped (pass --torch_python or set KD_JAX_TORCH_PYTHON to a Python '
          'with torch; kd_jax itself never needs it)')
    return
  rows = []
  for name, cfg in WORKLOADS.items():
    if args.only and args.only not in name:
      continue
    rates = {'kd_jax': [], 'eager': [], 'compile': []}
    memory = {}
    check = None
    with tempfile.TemporaryDirectory() as tmp:
      npz = os.path.join(tmp, 'w.npz')
      for _ in range(args.reps):
        res = _last_json([sys.executable, os.path.abspath(__file__), '--worker', name, '--npz',
                          npz, '--steps', str(args.steps)])
        rates['kd_jax'].append(res['steps_per_sec'])
        memory['kd_jax'] = res
        for mode in ('eager',) + (() if args.no_compile else ('compile',)):
          cmd = [args.torch_python, os.path.join(HERE, 'torch_side.py'), '--npz', npz,
                 '--workload', name, '--steps', str(args.steps), '--threads', str(args.threads)]
          res = _last_json(cmd + (['--compile'] if mode == 'compile' else []))
          _check_equal(name, res, npz)
          rates[mode].append(res['steps_per_sec'])
          memory[mode] = res
          check = res
    med = {k: statistics.median(v) for k, v in rates.items() if v}
    rows.append((name, med, memory))
    print(f'{name}: check {check}', flush=True)
  print('| workload | kd_jax step/s | PyTorch eager | torch.compile | kd_jax / eager | kd_jax / compile |')
  print('|---|---|---|---|---|---|')
  for name, med, _ in rows:
    comp = med.get('compile')
    print(f"| {name} | {med['kd_jax']:.2f} | {med['eager']:.2f} | "
          f"{comp:.2f} | " if comp else f"| {name} | {med['kd_jax']:.2f} | {med['eager']:.2f} | — | ",
          end='')
    print(f"{med['kd_jax'] / med['eager']:.2f}× | " +
          (f"{med['kd_jax'] / comp:.2f}× |" if comp else '— |'))
  print('\n| workload | peak RSS MiB (after imports): kd_jax | PyTorch eager | torch.compile '
        '| kd_jax after set-up | kd_jax step\'s XLA temporaries MiB | kd_jax device peak MiB |')
  print('|---|---|---|---|---|---|---|')
  mem = lambda m: f"{m['peak_rss_mb']:.0f} ({m['import_rss_mb']:.0f})" if m else '—'
  for name, _, memory in rows:
    ours = memory['kd_jax']
    dev = ours.get('device_peak_mb')
    print(f"| {name} | {mem(ours)} | {mem(memory.get('eager'))} | "
          f"{mem(memory.get('compile'))} | {ours['setup_rss_mb']:.0f} | "
          f"{ours['xla_temp_mb'] or 0:.0f} | {f'{dev:.0f}' if dev else '— (CPU: host memory)'} |")


if __name__ == '__main__':
  main()
