"""Fashion-MNIST consistency distillation (Song et al. 2023, Alg. 2) of the diffusion teacher:
an N = 18-level EDM grid, one teacher Heun step between adjacent levels, the EMA target network
θ⁻ (μ = 0.95), squared L2 metric; the student has the teacher's architecture with the consistency
preconditioning (f(x, σ_min) = x) and starts from its weights. Sampled in 1 and 2 steps.

`:lpips` measures the distance in the shipped classifier's feature space instead of L2 (the
paper's LPIPS, with this dataset's classifier).

Command:
  python launch.py --config configs/fashion_mnist/edm_consistency.py --workdir workdirs/fm_edm_cd
Expected: README "Diffusion distillation" (goal: 1-step FID ≤ 2× the teacher's). `:tiny` runs in
seconds.
"""
import ml_collections

from configs.fashion_mnist import common

LPIPS_LAYERS = ('stage1', 'stage2', 'stage3')


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  lpips, arg = common.split_variant(arg, 'lpips')
  mode = common.parse_arg(arg)
  tiny = mode == 'tiny'
  c = common.edm_base('consistency', {})
  c.teacher.checkpoint = 'pretrained:fashion_mnist/edm'
  if lpips:
    c.losses = [{'name': 'lpips', 'weight': 1.0,
                 'inputs': {'student_features': 'frozen_student_features',
                            'teacher_features': 'frozen_teacher_features'}}]
    c.frozen_net.checkpoint = 'pretrained:fashion_mnist/classifier'
    c.frozen_net.layers = list(LPIPS_LAYERS)
  c.optimizer.update(dict(learning_rate=2e-4, schedule='constant', warmup_steps=0))
  c.consistency.num_scales, c.consistency.target_ema = 18, 0.95
  c.ema_decay = 0.999
  c.data.batch_size = 64
  c.total_steps = 1500
  c.eval.teacher_steps = [1, 2]
  if mode == 'demo':
    # `make demo`: a short distillation and an evaluation that fits the demo's ten minutes: FIDs on
    # 5,000 samples (not the study's 10,000), 128 PSNR pairs (each costs the teacher's 35-NFE Heun
    # sample), images/s timed on 16 images.
    c.total_steps, c.checkpoint_every = 100, 100
    c.data.batch_size = 32
    c.eval.steps, c.eval.teacher_steps = [1], [1]  # the one-step student vs the one-step teacher
    c.eval.num_samples, c.eval.num_pairs, c.eval.throughput_batch = 5000, 128, 16
  if tiny:
    common.shrink_edm(c)
  return c
