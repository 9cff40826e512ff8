"""The trainable extras of a classifier distillation run: adapters, VID regressors, CRD embeddings.

Everything here lives in `params['extras']` (trained with the student, checkpointed, never exported);
CRD's memory bank is the only non-trained extra and lives in `TrainState.extras_state['crd']`.
Outputs are keyed as the loss terms read them (see `feature_plan`):

  adapted/<s>:<t>             1×1 conv of the student's <s> features to the teacher's channels
  vid_mean/<s>:<t>            VID's regressor on the student's <s> features
  vid_log_variance/<s>:<t>    VID's raw per-channel variance (softplus'd inside the loss)
  crd_student_embed           CRD's Embed (Dense + L2-normalise) of the student's feature
  crd_teacher_embed           CRD's Embed of the (frozen) teacher's feature; the Embed is trained
"""
from __future__ import annotations

from typing import Mapping

import flax.linen as nn

from kd_jax.losses import contrast, feature
from kd_jax.trainers.feature_plan import (ADAPTED, VID_LOG_VARIANCE, VID_MEAN, Adapters,
                                         module_name)
from kd_jax.types import Array

CRD_STUDENT_EMBED = 'crd_student_embed'
CRD_TEACHER_EMBED = 'crd_teacher_embed'


class VIDRegressor(nn.Module):
  """VID's mean regressor, as the reference `VIDLoss`: conv1x1 → ReLU → conv1x1 → ReLU → conv1x1,
  bias-free, with `mid` = the teacher's channel count (Ahn et al. 2019; CRD repo `VIDLoss`)."""
  mid: int
  out: int

  @nn.compact
  def __call__(self, x: Array) -> Array:
    x = nn.relu(nn.Conv(self.mid, (1, 1), use_bias=False, name='conv0')(x))
    x = nn.relu(nn.Conv(self.mid, (1, 1), use_bias=False, name='conv1')(x))
    return nn.Conv(self.out, (1, 1), use_bias=False, name='conv2')(x)


class ClassifierExtras(nn.Module):
  """All trainable extras of one run; fields are sized from the feature shapes before training.

  Attributes:
    adapters: `'<s>:<t>'` → the teacher's channel count, one 1×1 conv each.
    vid: `'<s>:<t>'` → the teacher's channel count, one VID regressor + variance each.
    crd_features: CRD embedding size (0: no CRD).
    crd_student, crd_teacher: the feature paths CRD embeds.
  """
  adapters: Mapping[str, int]
  vid: Mapping[str, int]
  crd_features: int = 0
  crd_student: str = ''
  crd_teacher: str = ''

  @nn.compact
  def __call__(self, student_feats: Mapping[str, Array],
               teacher_feats: Mapping[str, Array]) -> dict[str, Array]:
    out: dict[str, Array] = {}
    if self.adapters:
      mapped = Adapters(self.adapters, name='adapters')(
          {k: student_feats[k.partition(':')[0]] for k in self.adapters})
      out.update({ADAPTED + k: v for k, v in mapped.items()})
    for key, channels in self.vid.items():
      out[VID_MEAN + key] = VIDRegressor(channels, channels, name=f'vid_{module_name(key)}')(
          student_feats[key.partition(':')[0]])
      out[VID_LOG_VARIANCE + key] = self.param(
          f'vid_log_variance_{module_name(key)}', lambda _, c=channels: feature.vid_log_variance_init(c))
    if self.crd_features:
      out[CRD_STUDENT_EMBED] = contrast.Embed(self.crd_features, name='crd_embed_student')(
          student_feats[self.crd_student])
      out[CRD_TEACHER_EMBED] = contrast.Embed(self.crd_features, name='crd_embed_teacher')(
          teacher_feats[self.crd_teacher])
    return out
