"""Fashion-MNIST denoise teacher: wide conv autoencoder (width 32), corruption 'gaussian', L2 to the clean image.

Command:
  python launch.py --config configs/fashion_mnist/denoise_teacher.py --workdir workdirs/fm_denoise_teacher
Expected: PSNR/SSIM vs the clean test images in summary.json (README table, measured).
Runtime on 2 CPU cores: see README. `:tiny` runs in seconds.
"""
from configs.fashion_mnist import ae_base


def get_config(arg=None):
  return ae_base.base_config(arg, student=False, corruption='gaussian')
