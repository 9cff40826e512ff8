"""Fashion-MNIST compressed diffusion student: an `edm_unet` with 8/16/16 channels (0.108× the
params, 0.19× the FLOPs per evaluation) trained to match the frozen teacher's denoiser output on the same noisy
inputs and noise levels (λ(σ)-weighted L2, BK-SDM's output KD) plus its features at the middle of
the U-Net through 1×1 adapters (feature KD); sampled with the teacher's sampler (Heun 18).
The student starts from scratch (the teacher's weights do not fit a narrower network).

Command:
  python launch.py --config configs/fashion_mnist/edm_compress.py --workdir workdirs/fm_edm_compress
Expected: README "Diffusion distillation" (goal: FID ≤ 1.3× the teacher's). `:tiny` runs in seconds.
"""
import ml_collections

from configs.fashion_mnist import common

FEATURES = ('mid1', 'dec1_1')


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  mode = common.parse_arg(arg)
  tiny = mode == 'tiny'
  c = common.edm_base('compress', dict(common.TINY_EDM_STUDENT if tiny
                                             else common.EDM_STUDENT))
  c.teacher.checkpoint = 'pretrained:fashion_mnist/edm'
  c.losses = [{'name': 'weighted_l2', 'weight': 1.0, 'label': 'out_kd',
               'inputs': {'target_images': 'teacher_images'}}]
  c.losses += [{'name': 'feature_mse', 'weight': 0.1, 'label': f'feat_{p}',
                'inputs': {'student_features': f'adapted/{p}:{p}',
                           'teacher_features': f'teacher_features/{p}'}}
               for p in (FEATURES[:1] if tiny else FEATURES)]
  c.optimizer.update(dict(learning_rate=2e-3, schedule='cosine', warmup_steps=200))
  c.total_steps = 2000
  if tiny:
    common.shrink_edm(c)
    c.eval.steps = [2]
  return c
