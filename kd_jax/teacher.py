"""Restore a frozen teacher: its module and a variables pytree, from a finished run's checkpoint.

The teacher is the third pytree of a distillation run: restored here, passed to every train step as
its own argument, never given to an optimizer, never differentiated, never written into the student's
checkpoints (the student's `export` item holds only the student).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import flax.linen as nn
import jax

from kd_jax import checkpoint as ckpt_lib
from kd_jax import config_utils, errors
from kd_jax.types import PyTree


@dataclasses.dataclass(frozen=True)
class Teacher:
  module: nn.Module
  variables: PyTree
  model_config: dict[str, Any]
  meta: dict[str, Any]


# What to train for each exported role, for messages.
_ROLE_RUNS = {
    'model': 'a classifier run (e.g. configs/fashion_mnist/teacher.py)',
    'generator': 'a GAN run (e.g. configs/fashion_mnist/gan_teacher.py)',
    'discriminator': 'a GAN run (e.g. configs/fashion_mnist/gan_teacher.py)',
    'autoencoder': 'an autoencoder run (e.g. configs/fashion_mnist/ae_teacher.py)',
    'denoiser': 'a diffusion run (e.g. configs/fashion_mnist/edm_teacher.py)',
}


def check_exports(checkpoint: str, role: str, checkpoint_field: str) -> dict[str, Any]:
  """The run's meta, after checking it exports `role` (reads only JSON: cheap enough to do before
  training for a checkpoint that is only restored at the end, like config.eval.classifier_checkpoint).

  Raises:
    CheckpointError: no finished run at `checkpoint`, unreadable meta, or a run of another kind.
  """
  _, _, meta = ckpt_lib.read_meta(checkpoint, checkpoint_field)
  exported = meta.get('exported', {})
  if role not in exported:
    raise errors.CheckpointError(
        f"{checkpoint_field}={checkpoint!r} is a '{meta.get('trainer')}' run exporting "
        f"{sorted(exported)}, not a '{role}'; point it at the --workdir of "
        f"{_ROLE_RUNS.get(role, f'a run that exports a {role!r}')}.")
  return meta


# Collections a call may create that are not part of a model's stored state.
TRANSIENT_COLLECTIONS = ('intermediates', 'losses')


def restore_teacher(checkpoint: str, model_cfg: Any, *, role: str, init_args: Sequence[Any],
                    init_kwargs: dict[str, Any] | None = None,
                    field: str = 'config.teacher',
                    checkpoint_field: str | None = None,
                    model_field: str | None = None) -> Teacher:
  """Builds `model_cfg`'s module and restores the `role` variables exported by the run at `checkpoint`.

  Args:
    checkpoint: the teacher run's --workdir (or its checkpoints/ dir).
    model_cfg: `{'name': ..., **kwargs}`; empty → the model config saved with the checkpoint.
    role: which exported model to take ('model' for classifiers, 'generator'/'discriminator' for GANs,
      'autoencoder').
    init_args: example inputs used only to get the abstract parameter shapes (nothing is run).
    field: the config group of this teacher (`<field>.checkpoint`, `<field>.model` in messages).
    checkpoint_field: the config field holding `checkpoint` when it is not `<field>.checkpoint`
      (e.g. 'config.eval.classifier_checkpoint').
    model_field: the config field holding `model_cfg` when it is not `<field>.model`.
  """
  checkpoint_field = checkpoint_field or f'{field}.checkpoint'
  model_field = model_field or f'{field}.model'
  meta = check_exports(checkpoint, role, checkpoint_field)
  saved_cfg = meta['exported'][role]
  model_cfg = config_utils.to_dict(model_cfg) or saved_cfg
  name, kwargs = config_utils.model_kwargs(model_cfg, model_field)
  if name != saved_cfg.get('name'):
    raise errors.CheckpointError(
        f"{model_field}.name={name!r} but the checkpoint at {checkpoint!r} holds a "
        f"{saved_cfg.get('name')!r}; set {model_field} to {saved_cfg} (or leave it empty).")
  try:
    module = config_utils.build_model(model_cfg, model_field)
  except errors.ConfigError as e:
    if model_cfg is not saved_cfg:
      raise
    raise errors.CheckpointError(
        f'{checkpoint_field}={checkpoint!r}: the model config saved with the run cannot be built '
        f'({e}); the run comes from another kd_jax version or its meta is damaged.') from None
  abstract = jax.eval_shape(
      lambda: module.init(jax.random.key(0), *init_args, **(init_kwargs or {})))
  # Every stored collection (params, batch_stats, StyleGAN2-ADA's buffers), not per-call ones.
  abstract = {k: v for k, v in abstract.items() if k not in TRANSIENT_COLLECTIONS}
  restored = ckpt_lib.restore_export(checkpoint, {role: abstract}, checkpoint_field,
                                     model_field=model_field)
  return Teacher(module=module, variables=restored[role], model_config=model_cfg, meta=meta)
