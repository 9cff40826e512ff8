"""Fashion-MNIST KD student: the same small CNN and steps as the scratch student, distilled from the
ResNet-20 teacher with Hinton KD.

Loss: total = α · T²·KL(softmax(t/T) ‖ softmax(s/T)) + (1 − α) · CE(s, y), α = 0.5, T = 2
(`:T=4,alpha=0.9` — with `few` or a mode beside them if wanted — sets both, for sweeps).
(Measured on seed 0 before choosing: α=0.9/T=4 gave 81.85% and α=0.5/T=4 82.50%, both below the
scratch student; this capacity-limited student benefits from a lower temperature — README.)

Command (after the teacher run):
  python launch.py --config configs/fashion_mnist/kd_student.py --workdir workdirs/fm_kd \
      --config.teacher.checkpoint=workdirs/fm_teacher --config.seed=0
Expected: beats the scratch student (README "Fashion-MNIST study": mean ± std over 3 seeds).
`:few` / `:val`: the data-limited and full-data settings of `scratch_student.py` (their teacher is
`teacher.py:val`, workdirs/fm_teacher_val: it never saw the validation images).
Runtime on 2 CPU cores: see README (measured); `:tiny` runs in seconds.
"""
import ml_collections

from configs.fashion_mnist import common, scratch_student


TEMPERATURE, ALPHA = 2.0, 0.5


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  opts, rest = common.split_options(arg, {'T': float, 'alpha': float})
  c = scratch_student.get_config(rest)  # `:few`/`:val` included: the scratch student's data
  variant, mode_arg = scratch_student.split_data_variant(rest)
  c.teacher.checkpoint = common.classifier_teacher_checkpoint(held_out=bool(variant))
  c.teacher.model = common.teacher_model(common.parse_arg(mode_arg))
  alpha = opts.get('alpha', ALPHA)
  common.check_share(alpha, arg)
  c.losses = [('kd', alpha, {'temperature': opts.get('T', TEMPERATURE)})]
  if alpha < 1.0:
    c.losses.append(('ce', round(1.0 - alpha, 6), {}))
  return c
