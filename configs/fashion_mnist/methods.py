"""Fashion-MNIST loss-library benchmark: one teacher/student pair, the same steps, every method.

Teacher ResNet-20 (workdirs/fm_teacher), student the small CNN of scratch_student.py (batch 128,
Adam, cosine), here for BENCHMARK_STEPS = 1,000 steps: half the README study's 2,000, so that all
methods × 3 seeds fit in about two hours of 2 CPU cores. Each method is trained with cross-entropy as in the CRD benchmark (Tian et al. 2020,
RepDistiller): total = 1·CE + β·method with the reference's β ("CRD-repo weight" in each loss's
docstring), except the logit methods, which replace KD in the project's tuned KD mix
0.5·method(T=2) + 0.5·CE (see kd_student.py). Layers: the student and teacher share stage shapes
(stage1 28×28×16, stage2 14×14×32, stage3 7×7×64, features 64), so the reference's layer choices map
one to one: hints at stage2, AT/NST/VID on stage1..3 (summed, as the references do), SP on stage3
(the last conv block), RKD/PKT/CC/CRD on the pooled features.

Command (one method; `METHODS` lists them):
  python launch.py --config configs/fashion_mnist/methods.py:dkd --workdir workdirs/fm_m_dkd_s0 \
      --config.seed=0
All methods × seeds: python benchmarks/kd_methods.py (writes BENCHMARKS.md's table).
`:dkd,tiny` runs in seconds (tests).
"""
import ml_collections

from configs.fashion_mnist import common, scratch_student

STAGES = ('stage1', 'stage2', 'stage3')
CE = ('ce', 1.0, {})


def _pairs(name: str, weight: float, paths) -> list:
  """One term per layer (the references sum the per-layer losses); student and teacher layers share
  their names here, so `layer` is one path."""
  return [{'name': name, 'weight': weight, 'label': f'{name}_{p}', 'layer': p} for p in paths]


def _logit(name: str, **kwargs) -> list:
  return [(name, 0.5, kwargs), ('ce', 0.5, {})]


METHODS = {
    'scratch': [CE],
    'kd': _logit('kd', temperature=2.0),
    'reverse_kl': _logit('reverse_kl', temperature=2.0),
    'js': _logit('js', temperature=2.0),
    'logit_mse': [('logit_mse', 0.5, {}), ('ce', 0.5, {})],
    # DKD's CIFAR recipe: CE 1 + DKD(α=1, β=8, T=4) with a linear warm-up of its weight (the
    # reference warms up over its first 20 of 240 epochs; here over the first 170 of 1,000 steps,
    # ~0.36 epochs of batch 128 — a larger share of this short run, kept as measured).
    'dkd': [CE, {'name': 'dkd', 'weight': {'schedule': 'linear_schedule', 'init_value': 0.0,
                                          'end_value': 1.0, 'transition_steps': 170},
                 'kwargs': {'alpha': 1.0, 'beta': 8.0, 'temperature': 4.0}}],
    'dist': [CE, ('dist', 1.0, {})],
    'fitnet': [CE] + _pairs('fitnet', 100.0, ['stage2']),
    'at': [CE] + _pairs('at', 1.0, STAGES),
    'sp': [CE] + _pairs('sp', 3000.0, ['stage3']),
    'rkd': [CE] + _pairs('rkd', 1.0, ['features']),
    'pkt': [CE] + _pairs('pkt', 30000.0, ['features']),
    'nst': [CE] + _pairs('nst', 50.0, STAGES),
    # CC in the paper's Taylor-RBF form is ~1e4× smaller than RepDistiller's `Correlation` on the
    # same embeddings (kd_jax.losses.feature.cc docstring), so its weight is RepDistiller's 0.02
    # scaled by that ratio; `cc_repdistiller` is the reference's form at the reference's weight.
    'cc': [CE] + _pairs('cc', 300.0, ['features']),
    'cc_repdistiller': [CE] + _pairs('cc_repdistiller', 0.02, ['features']),
    'vid': [CE] + _pairs('vid', 1.0, STAGES),
    'crd': [CE, ('crd', 0.8, {})],
}
BENCHMARK_STEPS = 1000
# FitNets as the paper trains it: a hint stage (student up to the guided layer + regressor), then KD.
HINT_STEPS = 250
CRD_NEGATIVES = 4096  # the reference's 16384 costs 4× more memory traffic per step on this CPU


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  method, _, mode_arg = (arg or '').partition(',')
  if method not in METHODS and method != 'fitnet_stages':
    raise ValueError(f"unknown method {method!r}; use ':<method>' with one of "
                     f"{', '.join(list(METHODS) + ['fitnet_stages'])}.")
  mode = common.parse_arg(mode_arg)
  c = scratch_student.get_config(mode_arg or None)
  if mode == 'full':
    c.total_steps = BENCHMARK_STEPS
    c.eval_every = 250  # the table reports the best of these evaluations and the last
  if method != 'scratch':
    c.teacher.checkpoint = 'workdirs/fm_teacher'
    c.teacher.model = common.teacher_model(mode)
  if method == 'fitnet_stages':
    hint = HINT_STEPS if mode == 'full' else max(1, c.total_steps // 3)
    c.stages = [{'steps': hint, 'losses': _pairs('fitnet', 1.0, ['stage2'])},
                {'steps': c.total_steps - hint, 'losses': METHODS['kd']}]
  else:
    c.losses = METHODS[method]
  if method == 'crd':
    c.crd.student_feature = 'features'
    c.crd.teacher_feature = 'features'
    c.crd.num_negatives = CRD_NEGATIVES if mode == 'full' else 64
  return c
