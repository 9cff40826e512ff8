"""Fashion-MNIST image-to-image teacher: the wide conv autoencoder (width 32, 190k params) trained
input → fixed target, L2. Variants (`:<variant>[,tiny]`, default `edges`):

  edges    clean image → its Sobel edge map (`kd_jax.data.paired.edges`)
  stylize  clean image → emboss relief + smoothstep tone curve (`kd_jax.data.paired.stylize`)
  inpaint  image with one random 14×14 hole (set to 0) → the clean image

Command:
  python launch.py --config configs/fashion_mnist/i2i_teacher.py:edges --workdir workdirs/i2i_edges_teacher
Expected (1,000 steps, 10,000 test images): summary.json `eval/teacher…` is absent (this run is the
teacher), `eval/student_vs_target_psnr` ≈ 26 dB for edges, `eval/student_vs_clean_psnr` ≈ 20 dB for
inpaint; `fid.student_vs_target` in the shipped classifier's features. Runtime on 2 shared CPU cores:
~5-10 min (README table). `:tiny` runs in seconds (no FID).
"""
from configs.fashion_mnist import ae_base


def get_config(arg=None):
  return ae_base.i2i_config(arg, student=False)[0]
