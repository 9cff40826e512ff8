"""Offline KD from the teacher-output cache vs the online teacher (issue 13, item 4).

Teacher: ResNet-20 width 16 trained briefly here (`teacher.py` with width 16; its weights do not
matter for speed); student: the small CNN width 4. Three runs of `kd_student.py` on the real
Fashion-MNIST with the same fixed per-example augmentations (`teacher_cache.copies=4`):
  online   the teacher runs in every step (`teacher_cache.mode=online`);
  cached   the first run builds the cache (its time is reported), the second reads it.
step/s is the loop's own progress-line rate at the end of each run (compilation excluded); the final
params of online and cached are compared.

  .venv/bin/python benchmarks/bench_teacher_cache.py [--steps 300] [--root /tmp/kd_cache_bench]
"""
import argparse
import io
import os
import re
import shutil
import sys
import time
from contextlib import redirect_stdout

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument('--steps', type=int, default=300)
  parser.add_argument('--root', default='/tmp/kd_cache_bench')
  args = parser.parse_args()
  import jax
  import jax.numpy as jnp
  import numpy as np
  from kd_jax import checkpoint as ckpt_lib, config_utils, models
  from kd_jax.metrics import cost
  from kd_jax.trainers import classification

  shutil.rmtree(args.root, ignore_errors=True)
  teacher_model = {'name': 'resnet20', 'num_classes': 10, 'width': 16}
  student_model = {'name': 'small_cnn', 'num_classes': 10, 'width': 4}
  x = jnp.zeros((1, 28, 28, 1))
  flops = {}
  for name, m in (('teacher', teacher_model), ('student', student_model)):
    module = models.get(**m)
    v = module.init(jax.random.key(0), x, train=False)
    flops[name] = cost.flops(lambda v, x: module.apply(v, x, train=False), v, x)
  print(f'forward MFLOPs/image: teacher {flops["teacher"] / 1e6:.2f}, student '
        f'{flops["student"] / 1e6:.2f} (teacher/student {flops["teacher"] / flops["student"]:.1f}x)')

  teacher_cfg = config_utils.load_config_file('configs/fashion_mnist/teacher.py', 'tiny')
  teacher_cfg.data.data_dir = ''
  teacher_cfg.model = teacher_model
  teacher_cfg.total_steps = 20
  teacher_dir = os.path.join(args.root, 'teacher')
  with redirect_stdout(io.StringIO()):
    classification.train_and_evaluate(teacher_cfg, teacher_dir)

  def run(mode: str, name: str) -> tuple[float, float, str]:
    c = config_utils.load_config_file('configs/fashion_mnist/kd_student.py')
    c.model, c.teacher.model, c.teacher.checkpoint = student_model, teacher_model, teacher_dir
    c.total_steps, c.log_every, c.checkpoint_every, c.eval_every = args.steps, 50, 10 ** 6, 0
    c.teacher_cache.update(dict(mode=mode, copies=4, dir=os.path.join(args.root, 'cache')))
    out = io.StringIO()
    t0 = time.perf_counter()
    with redirect_stdout(out):
      classification.train_and_evaluate(c, os.path.join(args.root, name))
    rates = re.findall(r'\| ([0-9.]+) step/s', out.getvalue())
    return float(rates[-1]), time.perf_counter() - t0, os.path.join(args.root, name)

  online = run('online', 'online')
  built = run('cached', 'cached_build')
  cached = run('cached', 'cached')
  flat = lambda w: {jax.tree_util.keystr(k): np.asarray(v) for k, v in
                    jax.tree_util.tree_flatten_with_path(ckpt_lib.load_export_numpy(w))[0]}
  a, b = flat(online[2]), flat(cached[2])
  diff = max(float(np.max(np.abs(a[k] - b[k]))) for k in a)
  print(f'| run | step/s | wall (s) |\n|---|---|---|\n'
        f'| online teacher | {online[0]:.2f} | {online[1]:.0f} |\n'
        f'| cached (first run: builds the cache) | {built[0]:.2f} | {built[1]:.0f} |\n'
        f'| cached (cache read) | {cached[0]:.2f} | {cached[1]:.0f} |')
  print(f'speed-up of the step: {cached[0] / online[0]:.2f}x; cache build: about '
        f'{built[1] - cached[1]:.0f} s (first cached run minus the second); max |Δparam| online vs '
        f'cached after {args.steps} steps: {diff:.2e}')


if __name__ == '__main__':
  main()
