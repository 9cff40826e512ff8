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


def restore_teacher(checkpoint: str, model_cfg: Any, *, role: str, init_args: Sequence[Any],
                    init_kwargs: dict[str, Any] | None = None,
                    field: str = 'config.teacher') -> Teacher:
  """Builds `model_cfg`'s module and restores the `role` variables exported by the run at `checkpoint`.

  Args:
    checkpoint: the teacher run's --workdir (or its checkpoints/ dir).
    model_cfg: `{'name': ..., **kwargs}`; empty → the model config saved with the checkpoint.
    role: which exported model to take ('model' for classifiers, 'generator'/'discriminator' for GANs,
      'autoencoder').
    init_args: example inputs used only to get the abstract parameter shapes (nothing is run).
  """
  _, _, meta = ckpt_lib.read_meta(checkpoint, f'{field}.checkpoint')
  exported = meta.get('exported', {})
  if role not in exported:
    raise errors.CheckpointError(
        f"{field}.checkpoint={checkpoint!r} is a '{meta.get('trainer')}' run exporting "
        f"{sorted(exported)}, not a '{role}'; point it at a run that trained a {role} "
        f"(e.g. a {'GAN' if role in ('generator', 'discriminator') else role} teacher config).")
  saved_cfg = exported[role]
  model_cfg = config_utils.to_dict(model_cfg) or saved_cfg
  name, kwargs = config_utils.model_kwargs(model_cfg, f'{field}.model')
  if name != saved_cfg.get('name'):
    raise errors.CheckpointError(
        f"{field}.model.name={name!r} but the checkpoint at {checkpoint!r} holds a "
        f"{saved_cfg.get('name')!r}; set {field}.model to {saved_cfg}.")
  module = config_utils.build_model(model_cfg, f'{field}.model')
  abstract = jax.eval_shape(
      lambda: module.init(jax.random.key(0), *init_args, **(init_kwargs or {})))
  abstract = {k: v for k, v in abstract.items() if k in ('params', 'batch_stats')}
  restored = ckpt_lib.restore_export(checkpoint, {role: abstract}, f'{field}.checkpoint')
  return Teacher(module=module, variables=restored[role], model_config=model_cfg, meta=meta)
