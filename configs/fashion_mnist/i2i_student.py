"""Fashion-MNIST image-to-image student: narrow conv autoencoder (width 8, ~1/15 of the teacher's
params and FLOPs) distilled from the frozen i2i teacher of the same variant: L2 to the teacher's
output + 0.5·L2 to the target + 0.1·latent MSE through a learned 1×1 adapter. Variants as in
`i2i_teacher.py` (`:edges` default, `:stylize`, `:inpaint`; `,tiny` for seconds).

Command (after i2i_teacher with the same variant):
  python launch.py --config configs/fashion_mnist/i2i_student.py:edges --workdir workdirs/i2i_edges_student \
      --config.teacher.checkpoint=workdirs/i2i_edges_teacher
Expected (1,000 steps): `eval/student_vs_teacher_psnr` above `eval/student_vs_target_psnr`, a few dB
below the teacher's own vs-target PSNR; `fid.*` vs the targets and vs the teacher (README table,
measured). Runtime on 2 shared CPU cores: a few minutes.
"""
from configs.fashion_mnist import ae_base


def get_config(arg=None):
  c, variant = ae_base.i2i_config(arg, student=True)
  c.teacher.checkpoint = f'workdirs/i2i_{variant}_teacher'
  return c
