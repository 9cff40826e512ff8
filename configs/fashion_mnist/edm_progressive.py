"""Fashion-MNIST progressive distillation (Salimans & Ho 2022) of the diffusion teacher: rounds
16 → 8 → 4 → 2 → 1 DDIM (Euler) steps, each student starting from its teacher's weights and
trained on the two-teacher-step target x̃ (λ(σ)-weighted L2). Round k writes
<workdir>/steps_<N_k>; round 1 also scores the teacher itself at 16, 8, 4, 2 and 1 Euler steps.

`:compressed` starts the chain from the compressed student (workdirs/fm_edm_compress) instead and
stops at 4 steps: compressed architecture + few steps (issue 12's combined goal).

Command:
  python launch.py --config configs/fashion_mnist/edm_progressive.py --workdir workdirs/fm_edm_pd
Expected: README "Diffusion distillation" (goal at 4 steps: FID ≤ 1.3× the teacher's full-step FID,
far below the teacher at 4 steps). `:tiny` runs in seconds.
"""
import ml_collections

from configs.fashion_mnist import common
from kd_jax.trainers import progressive


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  compressed, arg = common.split_variant(arg, 'compressed')
  mode = common.parse_arg(arg)
  tiny = mode == 'tiny'
  c = progressive.default_config()
  c.teacher.checkpoint = ('workdirs/fm_edm_compress' if compressed
                          else 'pretrained:fashion_mnist/edm')
  c.model = {}
  c.progressive.start_steps, c.progressive.end_steps = 16, 4 if compressed else 1
  c.progressive.round_steps = 500
  c.optimizer.update(dict(learning_rate=5e-4, schedule='constant', warmup_steps=0))
  c.ema_decay = 0.99
  c.data.batch_size = 64
  c.checkpoint_every = 250
  c.eval.classifier_checkpoint = 'pretrained:fashion_mnist/classifier'
  if tiny:
    common.shrink_edm(c)
    c.progressive.start_steps, c.progressive.round_steps = 4, 2
    c.progressive.end_steps = 2 if compressed else 1
  return c
