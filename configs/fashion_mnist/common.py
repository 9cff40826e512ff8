"""Model choices and the `tiny` shrink shared by the Fashion-MNIST configs."""
import ml_collections

# Classification pair (teacher ResNet-20; student a narrow CNN, ≤ 1/8 of its params and FLOPs).
TEACHER_MODEL = {'name': 'resnet20', 'num_classes': 10}
# `convs_per_stage` is spelled out so the CLI can set it (`--config.model.convs_per_stage=2`: the
# 6-conv student of the full-data study, README).
STUDENT_MODEL = {'name': 'small_cnn', 'num_classes': 10, 'width': 16, 'convs_per_stage': 1}
TINY_TEACHER_MODEL = {'name': 'resnet20', 'num_classes': 10, 'width': 4}
# `make demo` must finish in 10 minutes on 2 cores: a 4× cheaper ResNet-20 (width 8) teacher.
DEMO_TEACHER_MODEL = {'name': 'resnet20', 'num_classes': 10, 'width': 8}
TINY_STUDENT_MODEL = {'name': 'small_cnn', 'num_classes': 10, 'width': 4, 'convs_per_stage': 1}


MODES = ('full', 'demo', 'tiny')


def parse_arg(arg: str | None) -> str:
  """`None`/'' → 'full' (the study run), 'demo' → the short `make demo` run, 'tiny' → seconds."""
  mode = arg or 'full'
  if mode not in MODES:
    raise ValueError(f"unknown config argument {arg!r}; use nothing, ':demo' or ':tiny'.")
  return mode


def split_variant(arg: str | None, variant: str) -> tuple[bool, str | None]:
  """':<variant>[,demo|tiny]' → (True, the rest); anything else → (False, arg)."""
  parts = (arg or '').split(',')
  if parts[0] != variant:
    return False, arg
  return True, ','.join(parts[1:]) or None


def split_options(arg: str | None, options: dict) -> tuple[dict, str | None]:
  """':few,T=4,alpha=0.9,tiny' → ({'T': 4.0, 'alpha': 0.9}, 'few,tiny'): `name=value` parts of the
  config argument, each converted with `options[name]` (the sweeps' knobs: the CLI cannot override
  one entry of the `losses` list)."""
  found, rest = {}, []
  for part in (arg or '').split(','):
    name, eq, value = part.partition('=')
    if not eq:
      rest.append(part)
    elif name in options:
      found[name] = options[name](value)
    else:
      raise ValueError(f'unknown config option {name!r} in {arg!r}; use one of {sorted(options)}.')
  return found, ','.join(p for p in rest if p) or None


def check_share(alpha: float, arg: str | None) -> None:
  """`alpha=` of a sweep: the distillation term's share of α·term + (1 − α)·CE, in (0, 1]."""
  if not 0.0 < alpha <= 1.0:
    raise ValueError(f"alpha={alpha:g} in {arg!r}: the distillation term's share must be in (0, 1].")


def edm_base(distill_mode: str, model: dict) -> ml_collections.ConfigDict:
  """Shared base of the diffusion configs: the trainer's defaults, the mode, the model, the
  shipped classifier for FID; `:tiny` shrinks it to seconds (2-step sampling everywhere)."""
  from kd_jax.trainers import diffusion  # pylint: disable=import-outside-toplevel
  c = diffusion.default_config()
  c.mode = distill_mode
  c.model = model
  c.checkpoint_every = 500
  c.eval.classifier_checkpoint = 'pretrained:fashion_mnist/classifier'
  return c


def shrink_edm(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """`shrink_generative` plus 2-step reference sampling (seconds-long diffusion runs)."""
  shrink_generative(config)
  config.optimizer.warmup_steps = 0
  config.eval.reference_steps = 2
  return config


def teacher_model(mode: str) -> dict:
  return dict({'full': TEACHER_MODEL, 'demo': DEMO_TEACHER_MODEL, 'tiny': TINY_TEACHER_MODEL}[mode])


# The validation split every tuning choice is made on: the last 10% of the training set (6,000
# images, fixed: the builder keeps the IDX files' order), never trained on; the test set is scored
# once, after training (`data.test_split`).
VALIDATION = dict(train_split='train[:90%]', eval_split='train[90%:]', test_split='test')


def classifier_teacher_checkpoint(held_out: bool) -> str:
  """The ResNet-20 teacher run a student distils from: `teacher.py:val`'s (trained on
  `train[:90%]` only) when the student is validated on the held-out 10%, else `teacher.py`'s."""
  return 'workdirs/fm_teacher_val' if held_out else 'workdirs/fm_teacher'


def use_validation(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Train on the first 90% of `train`, evaluate on the held-out 10%, test once at the end."""
  config.data.update(VALIDATION)
  return config


# The data-limited setting (KD's classic regime, Hinton et al. 2015 §3): the student sees only the
# first 10% of the training part (5,400 images with their labels); validation and test as above.
FEW_DATA = dict(VALIDATION, train_split='train[:9%]')


def use_few_data(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Train on `train[:9%]` (10% of the training part), validate on `train[90%:]`, test once."""
  config.data.update(FEW_DATA)
  return config


def shrink(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The same run in seconds: a few steps of small batches (tests and smoke checks)."""
  config.total_steps = 6
  config.log_every = 2
  config.checkpoint_every = 3
  if 'eval_every' in config:
    config.eval_every = 0
  config.data.batch_size = 32
  if 'eval_batch_size' in config.data:
    config.data.eval_batch_size = 128
  return config


# Generator families at 28 px, 1 channel. The conv layers scale with width², but the first dense
# layer (z → 7×7 start map) only linearly, and at 28 px it dominates: a 4× narrower student keeps
# 0.215 of the params, so the student is 8× narrower (width 4): 0.11 of the params, ~1/60 of the
# FLOPs (measured in summary.json of the distillation runs).
LATENT_DIM = 64
GAN_TEACHER = {'name': 'dcgan_generator', 'latent_dim': LATENT_DIM, 'width': 32, 'resolution': 28,
               'channels': 1}
GAN_STUDENT = dict(GAN_TEACHER, width=4)
GAN_DISCRIMINATOR = {'name': 'dcgan_discriminator', 'width': 32}
TINY_GAN_TEACHER = dict(GAN_TEACHER, width=8)
TINY_GAN_STUDENT = dict(GAN_TEACHER, width=2)
TINY_GAN_DISCRIMINATOR = dict(GAN_DISCRIMINATOR, width=8)


def shrink_generative(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Seconds-long generative run: tiny batches and a small evaluation sample."""
  config.total_steps = 4
  config.log_every = 2
  config.checkpoint_every = 2
  config.eval_every = 2
  config.data.batch_size = 16
  if 'eval_batch_size' in config.data:
    config.data.eval_batch_size = 128
  if 'num_samples' in config.eval:
    config.eval.num_samples = 128
    config.eval.batch_size = 64
    config.eval.grid_size = 16
  if 'num_pairs' in config.eval:
    config.eval.num_pairs = 64
  return config


# Autoencoders (28 px): teacher width 32, student width 8 → ~1/16 params and FLOPs; same latent size
# so the student's code can be matched to the teacher's through a 1×1 adapter.
AE_TEACHER = {'name': 'conv_autoencoder', 'width': 32, 'latent_dim': 16}
AE_STUDENT = dict(AE_TEACHER, width=8)
TINY_AE_TEACHER = dict(AE_TEACHER, width=8)
TINY_AE_STUDENT = dict(AE_TEACHER, width=4)


# StyleGAN2-ADA (NVIDIA's architecture, official field names) at 32 px: Fashion-MNIST is zero-padded
# from 28 to 32 px (`data.pad_to`, 2 px of its black background on each side), and the 28-px
# classifier scores the central 28 px (`eval.feature_crop`). Teacher: channels 64/64/32/16 at
# 4/8/16/32 px, the official 8-layer 128-wide mapping; student: 16/16/8/4 channels, a 2-layer
# 64-wide mapping (≥ 8× fewer params and FLOPs; measured in summary.json). Unfused modulated convs: one
# shared-weight conv per layer, the faster form on CPU (the official training form too).
SG2_RESOLUTION = 32
SG2_TEACHER = {'name': 'stylegan2_ada_generator', 'z_dim': LATENT_DIM, 'c_dim': 0, 'w_dim': 128,
               'img_resolution': SG2_RESOLUTION, 'img_channels': 1, 'mapping_layers': 8,
               'channel_base': 512, 'channel_max': 64, 'fused_modconv': False}
# 0.078× the teacher's params and 0.076× its FLOPs (a narrower w and 2 mapping layers: at this
# size the 8-layer 128-wide mapping alone would be half the student).
SG2_STUDENT = dict(SG2_TEACHER, w_dim=64, mapping_layers=2, channel_base=128, channel_max=16)
SG2_DISCRIMINATOR = {'name': 'stylegan2_ada_discriminator', 'c_dim': 0,
                     'img_resolution': SG2_RESOLUTION, 'img_channels': 1, 'channel_base': 512,
                     'channel_max': 64}
TINY_SG2_TEACHER = dict(SG2_TEACHER, w_dim=16, mapping_layers=2, channel_base=128, channel_max=16)
TINY_SG2_STUDENT = dict(TINY_SG2_TEACHER, mapping_layers=1, channel_base=64, channel_max=8)
TINY_SG2_DISCRIMINATOR = dict(SG2_DISCRIMINATOR, channel_base=128, channel_max=16)


def pad_to_stylegan2(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Data padded to the generator's 32 px; FID/KID/PR on the central 28 px the classifier knows."""
  config.data.pad_to = SG2_RESOLUTION
  config.eval.feature_crop = 28
  return config


# Diffusion (EDM) denoisers at 28 px: three levels 28/14/7. The teacher is sized for ~1 h of
# training on 2 cores; the compressed student has ≥ 4× fewer FLOPs per network evaluation.
EDM_TEACHER = {'name': 'edm_unet', 'img_channels': 1, 'channels': 16, 'channel_mult': [1, 2, 4],
               'num_blocks': 1}
# 8/16/16 channels: 61.8k params (0.108×), 19.9 MFLOPs per evaluation (0.19×; channels 8/16/32
# would keep 0.26×: the 28-px level dominates the FLOPs).
EDM_STUDENT = dict(EDM_TEACHER, channels=8, channel_mult=[1, 2, 2])
TINY_EDM_TEACHER = dict(EDM_TEACHER, channels=4, channel_mult=[1, 2])
TINY_EDM_STUDENT = dict(TINY_EDM_TEACHER, channels=2)
