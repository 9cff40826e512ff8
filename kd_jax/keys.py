"""Typed keys of a trainer's outputs dict: the one module that builds and parses them.

A key is `<family>` or `<family>/<layer>`. Loss roles are families (see `kd_jax.losses.registry`), so
a loss term names its layer once (`'layer': 'stage2'` or `'stage2:stage3'`, student:teacher) and
`for_role` turns each role into the key the trainer produces:

  student_logits, teacher_logits, teacher<i>_logits, labels         (classifiers)
  student_images, teacher_images, target_images, input_images       (generators, autoencoders)
  student_features/<path>, teacher_features/<path>, teacher<i>_features/<path>
                                       a model's intermediate output at a Flax module path
  adapted/<s>:<t>                      the student's <s> through a learned adapter to teacher <t>'s shape
  vid_mean/<s>:<t>, vid_log_variance/<s>:<t>
                                       VID's regressor on the student's <s> and its learned variance
  crd_student_scores, crd_teacher_scores
                                       CRD's memory-bank scores
  frozen_student_<x>, frozen_teacher_<x>   a frozen critic network (a GAN's D or a classifier) on the
                                       student's / teacher's images: x = logits, features, embedding
  fake_logits                          a trainable discriminator on the student's images

`teacher_<x>` without an index is the first teacher's (`teacher_logits`: the teachers' mean logits).
"""
from __future__ import annotations

import dataclasses
import re
from typing import Iterable

from kd_jax import errors

# Families whose keys carry a layer, and which side(s) of a 'student:teacher' layer they take.
STUDENT_FEATURES = 'student_features'
TEACHER_FEATURES = 'teacher_features'
ADAPTED = 'adapted'
VID_MEAN = 'vid_mean'
VID_LOG_VARIANCE = 'vid_log_variance'
PAIRED = (ADAPTED, VID_MEAN, VID_LOG_VARIANCE)
LAYERED = (STUDENT_FEATURES, TEACHER_FEATURES) + PAIRED

_INDEXED = re.compile(r'^teacher(\d+)_(\w+)$')


@dataclasses.dataclass(frozen=True)
class Key:
  """One outputs-dict key, parsed.

  Attributes:
    family: e.g. 'student_logits', 'teacher_features', 'adapted' (indexed teachers: 'teacher_<x>').
    student: the student's module path (student_features, adapted, vid_*).
    teacher: the teacher's module path (teacher_features, adapted, vid_*).
    index: the teacher index of a `teacher<i>_…` key (None: teacher 0 / the teachers' mean).
  """
  family: str
  student: str = ''
  teacher: str = ''
  index: int | None = None

  @property
  def reads_teacher(self) -> bool:
    return self.family.startswith('teacher') or self.family in PAIRED or self.family.startswith(
        ('crd_', 'frozen_teacher'))

  def __str__(self) -> str:
    family = self.family
    if self.index is not None:
      family = f'teacher{self.index}_{family[len("teacher_"):]}'
    if self.family == STUDENT_FEATURES:
      return f'{family}/{self.student}'
    if self.family == TEACHER_FEATURES:
      return f'{family}/{self.teacher}'
    if self.family in PAIRED:
      return f'{family}/{self.student}:{self.teacher}'
    return family


def parse(key: str) -> Key:
  """The `Key` of an outputs-dict string; ConfigError for a layered family without its layer."""
  family, _, layer = key.partition('/')
  index = None
  m = _INDEXED.match(family)
  if m:
    index, family = int(m.group(1)), f'teacher_{m.group(2)}'
  if family not in LAYERED:
    if layer:
      raise errors.ConfigError(f"outputs key {key!r}: '{family}' takes no '/<layer>'; use '{family}'.")
    return Key(family, index=index)
  if not layer:
    raise errors.ConfigError(f"outputs key {key!r} needs a layer: '{family}/<module path>'"
                             + (" (student:teacher)" if family in PAIRED else '') + '.')
  if family in PAIRED:
    s, _, t = layer.partition(':')
    if not s or not t:
      raise errors.ConfigError(f"outputs key {key!r} must read '{family}/<student path>:<teacher "
                               f"path>', e.g. '{family}/stage2:stage3'.")
    return Key(family, student=s, teacher=t, index=index)
  if family == STUDENT_FEATURES:
    return Key(family, student=layer)
  return Key(family, teacher=layer, index=index)


def split_layer(layer: str) -> tuple[str, str]:
  """'stage2' → ('stage2', 'stage2'); 'stage1:stage2' → (student path, teacher path)."""
  s, sep, t = str(layer).partition(':')
  s, t = s.strip('/'), (t if sep else s).strip('/')
  if not s or not t:
    raise errors.ConfigError(f"layer {layer!r} must be '<path>' or '<student path>:<teacher path>'.")
  return s, t


def for_role(role: str, layer: str | None) -> str:
  """The key a loss role reads: layered roles take the term's layer, the others are the role."""
  if role not in LAYERED:
    return role
  if not layer:
    raise errors.ConfigError(
        f"role '{role}' reads intermediate features: give the term a 'layer' (a module path such as "
        "'stage2', or 'stage1:stage2' for student:teacher), or map the role with 'inputs'.")
  s, t = split_layer(layer)
  return str(Key(role, student=s, teacher=t))


def check_offered(keys: Iterable[str], offered: Iterable[str], who: str) -> list[Key]:
  """Parses `keys`; ConfigError naming what `who` offers when a family is not among `offered`."""
  offered = tuple(offered)
  parsed = []
  for key in sorted(keys):
    k = parse(key)
    if k.family not in offered:
      raise errors.ConfigError(
          f"the loss terms read {key!r}, which the {who} trainer does not produce; it offers: "
          f"{', '.join(_describe(f) for f in offered)}.")
    parsed.append(k)
  return parsed


def _describe(family: str) -> str:
  if family in PAIRED:
    return f'{family}/<s>:<t>'
  return f'{family}/<path>' if family in LAYERED else family
