"""Teacher-output cache (offline KD): the frozen teacher's logits, computed once per training example
and augmentation copy, stored beside the dataset, read by the train step instead of the teacher.

A teacher is frozen, so its logits on a given input never change; online KD recomputes them every
step. With `config.teacher_cache.mode`:

  'off'      online teacher, fresh crop/flip each step (the default; nothing here is used);
  'online'   online teacher, but each example's augmentation is one of A fixed copies: example i,
             copy a (drawn per step) is cropped/flipped with the key fold_in(k, i·A + a) (k from
             `teacher_cache.seed`, not the run's seed, so every student of a sweep shares it);
  'cached'   the same inputs as 'online', the logits read from the cache (no teacher forward in the
             step): the results equal 'online' to float tolerance.

The cache is an [N, A, C] float32 array (`teacher_logits_<key>.npy`) with a JSON sidecar naming
what it was computed from (teacher fingerprint = sha256 of its variables, dataset, split, N, A,
crop padding, flip, seed); it lives in `teacher_cache.dir` or, by default, in
`<TFDS dataset dir>/kd_jax_teacher_cache/`, and is built on first use (every process computes it;
only the chief writes it, atomically). It sits on the devices beside the student (replicated):
sized for datasets like Fashion-MNIST/CIFAR (60k × 4 × 10 × 4 B = 9.6 MB); `MAX_BYTES` guards
larger ones (top-k storage is not implemented).
"""
from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from kd_jax import errors, parallel
from kd_jax.data import augment
from kd_jax.types import Array, PyTree

MODES = ('off', 'online', 'cached')
MAX_BYTES = 2 << 30
DIRNAME = 'kd_jax_teacher_cache'


def fingerprint(variables: PyTree) -> str:
  """sha256 of a pytree's leaves (paths, dtypes, shapes and bytes): which teacher a cache is of."""
  h = hashlib.sha256()
  for path, leaf in jax.tree_util.tree_flatten_with_path(variables)[0]:
    a = np.asarray(leaf)
    h.update(f'{jax.tree_util.keystr(path)}|{a.dtype}|{a.shape}|'.encode())
    h.update(np.ascontiguousarray(a).tobytes())
  return h.hexdigest()


def augmentation_root(seed: int) -> Array:
  """The key every cached augmentation is folded from (independent of the run's seed)."""
  return jax.random.fold_in(jax.random.key(seed), 0x6b64)


def augmented(root: Array, images: Array, index: Array, copy: Array, copies: int, *, pad: int,
              flip: bool, enabled: bool = True) -> Array:
  """Copy `copy` ([B]) of examples `index` ([B]): the fixed crop/flip of id index·copies + copy."""
  if not enabled:
    return images
  ids = index.astype(jnp.int32) * copies + copy.astype(jnp.int32)
  return augment.example_crop_flip(root, images, ids, pad=pad, flip=flip)


def draw_copies(rng: Array, batch: int, copies: int) -> Array:
  """Which of the A copies each example of a step sees, [B] int32 uniform in [0, A)."""
  return jax.random.randint(rng, (batch,), 0, copies, dtype=jnp.int32)


def describe(*, teacher_fingerprint: str, dataset: str, split: str, num_examples: int, copies: int,
             pad: int, flip: bool, augment_enabled: bool, seed: int) -> dict[str, Any]:
  return dict(teacher=teacher_fingerprint, dataset=dataset, split=split,
              num_examples=int(num_examples), copies=int(copies), pad=int(pad), flip=bool(flip),
              augment=bool(augment_enabled), seed=int(seed), format='float32 [N, copies, C]')


def path_of(directory: str, key: dict[str, Any]) -> str:
  digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
  return os.path.join(directory, f'teacher_logits_{digest}.npy')


def build(teacher_logits: Callable[[Array], Array], source: Any, *, copies: int, pad: int,
          flip: bool, augment_enabled: bool, seed: int, batch_size: int = 1000) -> np.ndarray:
  """[N, copies, C] logits of `teacher_logits(normalised images)` on every example and copy."""
  n = len(source)
  root = augmentation_root(seed)

  @jax.jit
  def one_batch(images: Array, index: Array, copy: Array) -> Array:
    x = augmented(root, images, index, copy, copies, pad=pad, flip=flip, enabled=augment_enabled)
    return teacher_logits(augment.normalize(x))

  out = None
  for start in range(0, n, batch_size):
    idx = np.arange(start, min(start + batch_size, n))
    images = np.stack([np.asarray(source[int(i)]['image']) for i in idx])
    for a in range(copies):
      logits = np.asarray(one_batch(images, idx.astype(np.int32),
                                    np.full(len(idx), a, np.int32)), np.float32)
      if out is None:
        _check_size(n, copies, logits.shape[-1])
        out = np.zeros((n, copies, logits.shape[-1]), np.float32)
      out[idx, a] = logits
  return out


def _check_size(n: int, copies: int, classes: int) -> None:
  size = n * copies * classes * 4
  if size > MAX_BYTES:
    raise errors.ConfigError(
        f'config.teacher_cache: {n} examples × {copies} copies × {classes} logits = '
        f'{size / 2**30:.1f} GiB exceeds the on-device cache limit of {MAX_BYTES / 2**30:.0f} '
        'GiB; lower config.teacher_cache.copies or use mode=\'off\'.')


def load_or_build(directory: str, key: dict[str, Any],
                  compute: Callable[[], np.ndarray]) -> tuple[np.ndarray, str, bool]:
  """(cache, its path, whether it was built now): reads `path_of(directory, key)` when its sidecar
  matches `key`, else computes it and (chief only) writes it atomically."""
  path = path_of(directory, key)
  meta_path = path[:-4] + '.json'
  if os.path.exists(path) and os.path.exists(meta_path):
    with open(meta_path) as f:
      saved = json.load(f)
    if saved == key:
      cache = np.load(path)
      if cache.shape[:2] == (key['num_examples'], key['copies']):
        return cache, path, False
  cache = compute()
  if parallel.is_chief():
    try:
      os.makedirs(directory, exist_ok=True)
      tmp = f'{path}.tmp{os.getpid()}'
      with open(tmp, 'wb') as f:
        np.save(f, cache)
      os.replace(tmp, path)
      with open(meta_path + '.tmp', 'w') as f:
        json.dump(key, f, indent=1, sort_keys=True)
      os.replace(meta_path + '.tmp', meta_path)
    except OSError as e:
      raise errors.ConfigError(f'config.teacher_cache.dir: cannot write the teacher cache to '
                               f'{directory} ({e}); set config.teacher_cache.dir to a writable '
                               'directory.') from None
  return cache, path, True
