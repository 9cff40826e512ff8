"""Fashion-MNIST image-to-image student: narrow conv autoencoder (width 8, ~1/15 of the teacher's
params and FLOPs) distilled from the frozen i2i teacher of the same variant: L2 to the teacher's
output + 0.5·L2 to the target + 0.1·latent MSE through a learned 1×1 adapter. Variants as in
`i2i_teacher.py` (`:edges` default, `:stylize`, `:inpaint`; `,tiny` for seconds).

Command (after i2i_teacher with the same variant):
  python launch.py --config configs/fashion_mnist/i2i_student.py:edges --workdir workdirs/i2i_edges_student \
      --config.teacher.checkpoint=workdirs/i2i_edges_teacher
Expected (measured at 400 steps, as the teacher, 2 shared CPU cores; 12.9k params = 0.068× the
teacher's, FLOPs 0.067×): edges vs teacher 23.39 dB / 0.837, vs target 20.90 dB / 0.724 (teacher
23.99 / 0.848), FID vs target 3.13 (teacher 1.61), vs teacher 0.99, 202 s; inpaint vs teacher
21.36 dB / 0.704, vs clean 16.66 dB / 0.479 (teacher 18.60 / 0.603), FID vs clean 6.95 (teacher 3.82),
191 s.
"""
from configs.fashion_mnist import ae_base


def get_config(arg=None):
  c, variant = ae_base.i2i_config(arg, student=True)
  c.teacher.checkpoint = f'workdirs/i2i_{variant}_teacher'
  return c
