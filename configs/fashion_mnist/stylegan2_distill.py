"""StyleGAN2-ADA teacher → student of the same family (≥ 8× fewer params and FLOPs), data-free, on
the same z and per-layer noise: L1 between the images + LPIPS through the teacher's frozen
discriminator (its conv features at 16, 8 and 4 px) + the teacher's 16-px synthesis features
through a learned 1×1 adapter + the batch-relation KL on the discriminator's pooled features
(how the teacher's samples relate to each other, which the student's must too).

`:l1` keeps only the L1 term (the output-only baseline). `:gan` adds an adversarial term: a
StyleGAN2-ADA D (trained from scratch with the teacher's D recipe, R1 every step) tells the teacher's samples from the student's,
and the student gets the non-saturating loss at weight 0.05 (GAN-compression recipes pair the
per-sample regressions with it so the student stays sharp instead of averaging).

`:data` is the scratch student's recipe plus distillation (as GAN-compression recipes for StyleGAN2
do): D learns real images against the student's (mode 'data', the teacher's D recipe with lazy R1
every 16 steps), the student gets the non-saturating loss at weight 1 with the teacher's G
optimizer and G EMA, and every distillation term above at weight `DATA_KD_WEIGHT`. Against
`stylegan2_scratch_student.py` at equal steps this measures what the teacher adds: D's fakes are
drawn as the GAN trainer draws them (`adversarial.fresh_latents`), so with no distillation term
the step is the scratch student's step (tests/test_steps.py).

`:data_d` is `:data` with the adversarial D starting from the teacher's trained discriminator
(`adversarial.init_from='teacher'`, as GAN-compression recipes such as CAGAN do) instead of a fresh
one; `:d_only` keeps only that (the scratch recipe with the teacher's D, no regression terms), the
ablation that says which of the two the student gains from.

Command (the teacher and the FID classifier are the shipped ones; point `teacher.checkpoint` at
your own stylegan2_teacher run or an imported official G to distil that instead):
  python launch.py --config configs/fashion_mnist/stylegan2_distill.py --workdir workdirs/fm_sg2_distill
"""
import ml_collections

from configs.fashion_mnist import common, stylegan2_scratch_student, stylegan2_teacher
from kd_jax.trainers import generator_distill

FROZEN = {'student_features': 'frozen_student_features',
          'teacher_features': 'frozen_teacher_features'}
D_LAYERS = ['b32/conv1', 'b16/conv1', 'b8/conv1']
DATA_KD_WEIGHT = 0.25  # `:data`: the distillation terms' weight beside the GAN loss at 1


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  l1, arg = common.split_variant(arg, 'l1')
  gan, arg = common.split_variant(arg, 'gan')
  data, arg = common.split_variant(arg, 'data')
  data_d, arg = common.split_variant(arg, 'data_d')
  d_only, arg = common.split_variant(arg, 'd_only')
  teacher_d = data_d or d_only
  variant = 'l1' if l1 else 'gan' if gan else 'data' if data or teacher_d else ''
  mode = common.parse_arg(arg)
  tiny = mode == 'tiny'
  c = generator_distill.default_config()
  c.model = dict(common.TINY_SG2_STUDENT if tiny else common.SG2_STUDENT)
  c.teacher.checkpoint = 'pretrained:fashion_mnist/stylegan2'
  c.teacher.model = dict(common.TINY_SG2_TEACHER if tiny else common.SG2_TEACHER)
  c.losses = [('l1', 1.0, {})]
  if variant != 'l1':
    c.losses += [
        {'name': 'lpips', 'weight': 1.0, 'inputs': FROZEN},
        {'name': 'feature_mse', 'weight': 1.0, 'label': 'feat_b16',
         'inputs': {'student_features': 'adapted/synthesis/b16/conv1:synthesis/b16/conv1',
                    'teacher_features': 'teacher_features/synthesis/b16/conv1'}},
        {'name': 'relation_kl', 'weight': 1.0,
         'inputs': {'student_features': 'frozen_student_embedding',
                    'teacher_features': 'frozen_teacher_embedding'}},
    ]
    c.frozen_net.kind = 'teacher_discriminator'
    c.frozen_net.layers = list(D_LAYERS)
  recipe = stylegan2_teacher.get_config()  # the teacher's (and scratch student's) GAN recipe
  if variant == 'data':
    c.losses = [dict(t, weight=DATA_KD_WEIGHT) if isinstance(t, dict)
                else (t[0], DATA_KD_WEIGHT, t[2]) for t in c.losses]
    if d_only:
      c.losses, c.frozen_net.kind, c.frozen_net.layers = [], 'none', []
    c.losses += [('gan_ns_g', 1.0, {})]
    c.mode = 'data'
    c.adversarial.fresh_latents = True  # D's fakes drawn as the GAN trainer draws them
    c.adversarial.r1_every = recipe.r1_every
    c.ema_decay = recipe.ema_decay
  if variant == 'gan':
    c.losses += [('gan_ns_g', 0.05, {})]
  if variant in ('gan', 'data'):
    c.adversarial.discriminator = dict(common.TINY_SG2_DISCRIMINATOR if tiny
                                       else common.SG2_DISCRIMINATOR)
    c.adversarial.r1_gamma = recipe.r1_gamma
    c.adversarial.init_from = 'teacher' if teacher_d else ''
    c.adversarial.optimizer.update(dict(learning_rate=recipe.d_optimizer.learning_rate,
                                        b1=recipe.d_optimizer.b1, b2=recipe.d_optimizer.b2))
  c.optimizer.update(dict(name='adam', learning_rate=1e-3, schedule='cosine', b1=0.5, b2=0.99))
  if variant == 'data':
    c.optimizer.update(dict(learning_rate=recipe.g_optimizer.learning_rate, schedule='constant',
                            b1=recipe.g_optimizer.b1, b2=recipe.g_optimizer.b2))
  c.data.batch_size = 32
  c.total_steps = stylegan2_scratch_student.STUDENT_STEPS
  c.eval_every = 1000
  c.checkpoint_every = 500
  c.eval.feature_layer = 'features'
  c.eval.classifier_checkpoint = 'pretrained:fashion_mnist/classifier'
  common.pad_to_stylegan2(c)
  if mode == 'demo':
    c.total_steps, c.eval_every = 400, 200
  if tiny:
    common.shrink_generative(c)
  return c
