"""Fashion-MNIST student from scratch (the baseline): the small CNN trained on labels only.

Command:
  python launch.py --config configs/fashion_mnist/scratch_student.py --workdir workdirs/fm_scratch \
      --config.seed=0
Expected: below the KD student at equal steps (README "Fashion-MNIST study": mean ± std, 3 seeds).
`:few` is the data-limited setting: the first 10% of the training part only (`common.FEW_DATA`,
5,400 labelled images), validated every 500 steps on `train[90%:]`, `test` scored once at the end.
`:val` is the full-data setting of the same protocol: the whole training part `train[:90%]`,
validated every 1,000 steps on `train[90%:]`, `test` scored once at the end. The ~100k-param
student for it: `--config.model.width=18 --config.model.convs_per_stage=2` (91,792 params, two
3×3 convs per stage).
Runtime on 2 CPU cores: see README (measured); `:tiny` runs in seconds.
"""
import ml_collections

from configs.fashion_mnist import common
from kd_jax.trainers import classification

STUDENT_STEPS = 2000
# The data variants: which part of `train` the student learns from (both validate on `train[90%:]`),
# and how many steps apart the validations are.
DATA_VARIANTS = {'few': (common.use_few_data, 500), 'val': (common.use_validation, 1000)}


def split_data_variant(arg: str | None) -> tuple[str | None, str | None]:
  """':few[,demo|tiny]' / ':val[,…]' → (the variant, the rest); anything else → (None, arg)."""
  for name in DATA_VARIANTS:
    found, rest = common.split_variant(arg, name)
    if found:
      return name, rest
  return None, arg


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variant, arg = split_data_variant(arg)
  mode = common.parse_arg(arg)
  tiny = mode == 'tiny'
  c = classification.default_config()
  c.model = dict(common.TINY_STUDENT_MODEL if tiny else common.STUDENT_MODEL)
  c.losses = [('ce', 1.0, {})]
  c.optimizer.update(dict(name='adam', learning_rate=3e-3, schedule='cosine', warmup_steps=100))
  c.data.batch_size = 128
  c.total_steps = STUDENT_STEPS
  c.log_every = 200
  c.eval_every = 0
  c.checkpoint_every = 1000
  if mode == 'demo':
    c.total_steps = 400
  if tiny:
    common.shrink(c)
    c.optimizer.warmup_steps = 0
  if variant:
    use, eval_every = DATA_VARIANTS[variant]
    use(c)
    c.eval_every = 0 if tiny else eval_every
  return c
