"""One-step distribution-matching distillation of the EDM teacher (DMD2, Yin et al. 2024), data-free:
the generator G(z) = D(σ_max·z; σ_max) and a "fake" denoiser both start from the teacher; per
generator step the fake denoiser takes 5 steps of EDM's loss on fresh G samples (two-timescale),
then G follows the KL gradient (D_fake − D_teacher)/mean|x − D_teacher| at σ(t), t ~ U[0.02, 0.98].
No regression loss and no GAN term. Evaluated with 1 step against the teacher at 1, 2 and 18 steps.

Command (the teacher and the FID classifier are the shipped ones):
  python launch.py --config configs/fashion_mnist/edm_dmd.py --workdir workdirs/fm_edm_dmd
Expected: README "Diffusion distillation" (goal: 1-step FID ≤ 1.5× the teacher's). `:tiny` runs in
seconds.
"""
import ml_collections

from configs.fashion_mnist import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  mode = common.parse_arg(arg)
  tiny = mode == 'tiny'
  c = common.edm_base('dmd', {})
  c.teacher.checkpoint = 'pretrained:fashion_mnist/edm'
  # DMD2 trains both networks with Adam at one small learning rate, β1 = 0 (their ImageNet recipe:
  # 2e-6 at batch 280; a 570k-param U-Net at batch 32 tolerates far more).
  c.optimizer.update(dict(learning_rate=5e-5, schedule='constant', warmup_steps=0, b1=0.0,
                          b2=0.999))
  c.dmd.fake_updates = 5
  c.ema_decay = 0.99
  c.data.batch_size = 32
  c.total_steps = 1000
  c.checkpoint_every = 250
  c.eval.teacher_steps = [1, 2]
  if tiny:
    common.shrink_edm(c)
    c.dmd.fake_updates = 2
  return c
