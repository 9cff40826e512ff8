"""Model choices and the `tiny` shrink shared by the Fashion-MNIST configs."""
import ml_collections

# Classification pair (teacher ResNet-20; student a narrow CNN, ≤ 1/8 of its params and FLOPs).
TEACHER_MODEL = {'name': 'resnet20', 'num_classes': 10}
STUDENT_MODEL = {'name': 'small_cnn', 'num_classes': 10, 'width': 16}
TINY_TEACHER_MODEL = {'name': 'resnet20', 'num_classes': 10, 'width': 4}
TINY_STUDENT_MODEL = {'name': 'small_cnn', 'num_classes': 10, 'width': 4}


def parse_arg(arg: str | None) -> bool:
  """`None`/'' → full run, 'tiny' → seconds-long run for tests; anything else is an error."""
  if arg in (None, ''):
    return False
  if arg == 'tiny':
    return True
  raise ValueError(f"unknown config argument {arg!r}; use nothing or ':tiny'.")


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
