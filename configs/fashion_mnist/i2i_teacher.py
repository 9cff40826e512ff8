"""Fashion-MNIST image-to-image teacher: the wide conv autoencoder (width 32, 190k params) trained
input → fixed target, L2. Variants (`:<variant>[,tiny]`, default `edges`):

  edges    clean image → its Sobel edge map (`kd_jax.data.paired.edges`)
  stylize  clean image → emboss relief + smoothstep tone curve (`kd_jax.data.paired.stylize`)
  inpaint  image with one random 14×14 hole (set to 0) → the clean image

Command:
  python launch.py --config configs/fashion_mnist/i2i_teacher.py:edges --workdir workdirs/i2i_edges_teacher
Expected (summary.json; this run's own model is reported as `student`): measured at 400 steps
(`--config.total_steps=400 --config.eval_every=200 --config.checkpoint_every=200`, 2 CPU cores shared
with other jobs), 10,000 test images: edges 23.99 dB / SSIM 0.848 vs the target, FID 1.61 vs the
targets (`fid.student_vs_target`, shipped classifier's `features`), 533 s; inpaint 18.60 dB / 0.603
vs clean (the holed input: 15.20 dB / 0.559), FID 3.82, 654 s. The default 1,000 steps: ~5 min on 2
free cores, estimated from ae_teacher's 868 s / 3,000 steps (not measured). `:tiny` runs in seconds (no FID).
"""
from configs.fashion_mnist import ae_base


def get_config(arg=None):
  return ae_base.i2i_config(arg, student=False)[0]
