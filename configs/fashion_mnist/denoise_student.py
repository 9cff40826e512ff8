"""Fashion-MNIST denoise student: narrow autoencoder (width 8, ~1/16 of the teacher) distilled from
the denoise teacher: L2 to the teacher's output + 0.5·L2 to the clean image + 0.1·latent MSE through a
learned 1×1 adapter. Corruption 'gaussian'.

Command (after denoise_teacher):
  python launch.py --config configs/fashion_mnist/denoise_student.py --workdir workdirs/fm_denoise_student \
      --config.teacher.checkpoint=workdirs/fm_denoise_teacher
Expected: PSNR/SSIM close to the teacher's (README table, measured). Runtime: see README.
"""
from configs.fashion_mnist import ae_base


def get_config(arg=None):
  c = ae_base.base_config(arg, student=True, corruption='gaussian')
  c.teacher.checkpoint = 'workdirs/fm_denoise_teacher'
  return c
