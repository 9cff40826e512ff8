"""Pictures and summaries of a run: image grids, labelled teacher/student comparisons, PNG files,
and the run's summary JSON.

Everything here is host-side NumPy/PIL and takes plain arrays, so any trainer or script can use it.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import tempfile
from typing import Any, Mapping, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

_WHITE = 255


def to_uint8(images: Any) -> np.ndarray:
  """Images in [-1, 1] (values outside are clipped) → uint8 in [0, 255]; uint8 passes through."""
  images = np.asarray(images)
  if images.dtype == np.uint8:
    return images
  return np.round((np.clip(images.astype(np.float32), -1.0, 1.0) + 1.0) * 127.5).astype(np.uint8)


def image_grid(images: Any, ncols: int, *, pad: int = 2, pad_value: int = _WHITE) -> np.ndarray:
  """Tiles images into rows of `ncols`, separated and surrounded by a `pad`-pixel border.

  Args:
    images: [N, H, W, C] with C in {1, 3} (or [N, H, W]), floats in [-1, 1] or uint8.
    ncols: images per row; fewer images give a narrower grid; empty tiles are border-coloured.
    pad: border width in pixels.
    pad_value: border grey level (white by default, visible against dark Fashion-MNIST images).

  Returns:
    uint8 [rows·(H+pad)+pad, cols·(W+pad)+pad, C].
  """
  images = to_uint8(images)
  if images.ndim == 3:
    images = images[..., None]
  if images.ndim != 4 or images.shape[-1] not in (1, 3) or images.shape[0] == 0:
    raise ValueError(f'images must be [N, H, W, 1 or 3] with N >= 1; got shape {images.shape}.')
  if ncols < 1:
    raise ValueError(f'ncols must be >= 1, got {ncols}.')
  n, h, w, c = images.shape
  cols = min(ncols, n)
  rows = math.ceil(n / cols)
  grid = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, c), pad_value, np.uint8)
  for i in range(n):
    top = pad + (i // cols) * (h + pad)
    left = pad + (i % cols) * (w + pad)
    grid[top:top + h, left:left + w] = images[i]
  return grid


def _text_width(font: Any, text: str) -> int:
  left, _, right, _ = font.getbbox(text)
  return int(math.ceil(right - min(left, 0)))


def side_by_side(rows: Sequence[tuple[str, Any]], ncols: int, *, pad: int = 2) -> np.ndarray:
  """Stacks one labelled grid per entry, e.g. [('teacher', t_imgs), ('student', s_imgs)].

  Each entry's images are tiled with `image_grid(images, ncols)`; the label is written with PIL's
  default font in a left margin. Grayscale entries are turned to RGB when any entry is RGB.
  Meant for comparing the same latents / inputs across models, so give every entry the same
  number of images in the same order.

  Returns:
    uint8 [H', W', C] image (C = 3 if any entry is RGB, else 1).
  """
  if not rows:
    raise ValueError('side_by_side needs at least one (label, images) row.')
  blocks = [image_grid(images, ncols, pad=pad) for _, images in rows]
  channels = max(b.shape[-1] for b in blocks)
  blocks = [np.repeat(b, channels, axis=-1) if b.shape[-1] != channels else b for b in blocks]
  font = ImageFont.load_default()
  margin = max(_text_width(font, label) for label, _ in rows) + 2 * pad + 2
  width = margin + max(b.shape[1] for b in blocks)
  canvas = np.full((sum(b.shape[0] for b in blocks), width, channels), _WHITE, np.uint8)
  label_tops = []
  top = 0
  for block in blocks:
    canvas[top:top + block.shape[0], margin:margin + block.shape[1]] = block
    label_tops.append(top + pad)
    top += block.shape[0]
  picture = Image.fromarray(canvas[..., 0] if channels == 1 else canvas)
  draw = ImageDraw.Draw(picture)
  for (label, _), label_top in zip(rows, label_tops):
    draw.text((pad, label_top), str(label), fill=0 if channels == 1 else (0, 0, 0), font=font)
  out = np.asarray(picture, np.uint8)
  return out[..., None] if out.ndim == 2 else out


def _atomic_write(path: str, write: Any, mode: str) -> None:
  """Writes through a temp file in the target directory and renames it into place, so readers
  (and a run killed mid-write) never see a half-written file."""
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=directory, prefix='.tmp-', suffix=os.path.basename(path))
  try:
    with os.fdopen(fd, mode) as f:
      write(f)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def save_png(path: str, image_uint8: Any) -> None:
  """Writes a uint8 [H, W], [H, W, 1] or [H, W, 3] image as PNG, creating parent directories."""
  image = np.asarray(image_uint8)
  if image.dtype != np.uint8:
    raise ValueError(f'save_png needs uint8 pixels, got {image.dtype}; use report.to_uint8 first.')
  if image.ndim == 3 and image.shape[-1] == 1:
    image = image[..., 0]
  if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[-1] != 3):
    raise ValueError(f'save_png needs [H, W], [H, W, 1] or [H, W, 3]; got shape {image.shape}.')
  picture = Image.fromarray(image)
  _atomic_write(path, lambda f: picture.save(f, format='PNG'), 'wb')


def to_jsonable(obj: Any) -> Any:
  """Converts a summary value to plain JSON types.

  NumPy/JAX scalars → Python numbers, arrays → nested lists, mappings (incl. ConfigDicts) → dicts
  with string keys, tuples/sets → lists, dataclasses → dicts; anything else → `str(obj)`, so a
  summary written at the end of a long run never fails on one odd value.
  """
  if obj is None or isinstance(obj, (bool, int, float, str)):
    return obj
  if hasattr(obj, 'to_dict') and callable(obj.to_dict):  # ml_collections.ConfigDict, reports
    return to_jsonable(obj.to_dict())
  if isinstance(obj, Mapping):
    return {str(k): to_jsonable(v) for k, v in obj.items()}
  if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
    return to_jsonable(dataclasses.asdict(obj))
  if isinstance(obj, (list, tuple, set, frozenset)):
    return [to_jsonable(v) for v in obj]
  if isinstance(obj, np.generic):
    return obj.item()
  if hasattr(obj, '__array__') and hasattr(obj, 'dtype'):  # np.ndarray, jax.Array
    return np.asarray(obj).tolist()
  return str(obj)


def write_summary(path: str, summary: Mapping[str, Any]) -> None:
  """Writes `summary` as indented JSON with sorted keys, atomically (temp file + rename).

  Values go through `to_jsonable`. Non-finite floats are written as NaN / Infinity (as Python's
  json module does), e.g. the PSNR of identical images; `json.load` reads them back.
  """
  text = json.dumps(to_jsonable(summary), indent=2, sort_keys=True) + '\n'
  _atomic_write(path, lambda f: f.write(text), 'w')
