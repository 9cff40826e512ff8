"""State-dict files as `{key: np.ndarray}`: `.safetensors`, and `.pth`/`.pt` without torch.

A `.pth` is a zip holding a pickle (`data.pkl`) whose tensors point at raw storages (`data/<key>`).
Unpickling runs whatever callables the pickle names, so it is read with an allow-list that admits
only what `torch.save(model.state_dict())` writes: containers, `_rebuild_tensor_v2` and storage
types. Torch is never imported.
"""
from __future__ import annotations

import collections
import os
import pickle
import tempfile
import zipfile
from typing import Any, Callable, Mapping

import ml_dtypes
import numpy as np

from kd_jax import errors

PTH_SUFFIXES = ('.pth', '.pt')
SAFETENSORS_SUFFIX = '.safetensors'

# torch storage class name → numpy dtype of its elements.
_STORAGE_DTYPES: dict[str, np.dtype] = {
    'DoubleStorage': np.dtype(np.float64), 'FloatStorage': np.dtype(np.float32),
    'HalfStorage': np.dtype(np.float16), 'BFloat16Storage': np.dtype(ml_dtypes.bfloat16),
    'LongStorage': np.dtype(np.int64), 'IntStorage': np.dtype(np.int32),
    'ShortStorage': np.dtype(np.int16), 'CharStorage': np.dtype(np.int8),
    'ByteStorage': np.dtype(np.uint8), 'BoolStorage': np.dtype(np.bool_),
}


class _StorageType:
  """Stands in for `torch.<X>Storage` in the pickle: only its element dtype matters."""

  def __init__(self, name: str):
    self.name = name
    self.dtype = _STORAGE_DTYPES[name]


def _rebuild_tensor_v2(storage: np.ndarray, storage_offset: int, size: tuple[int, ...],
                       stride: tuple[int, ...], requires_grad: bool = False,
                       backward_hooks: Any = None, metadata: Any = None) -> np.ndarray:
  """A copy of the strided view torch would build over the flat `storage`."""
  del requires_grad, backward_hooks, metadata
  size, stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)
  if not size:
    return storage[storage_offset:storage_offset + 1].reshape(()).copy()
  if min(size) == 0:
    return np.zeros(size, storage.dtype)
  # The farthest element the view reaches must lie inside the storage, else the file is corrupt
  # (as_strided would read whatever memory follows it).
  last = storage_offset + sum((n - 1) * s for n, s in zip(size, stride))
  if storage_offset < 0 or min(stride) < 0 or last >= len(storage):
    raise ValueError(f'tensor of size {size}, stride {stride}, offset {storage_offset} lies '
                     f'outside its storage of {len(storage)} elements')
  item = storage.dtype.itemsize
  view = np.lib.stride_tricks.as_strided(storage[storage_offset:], shape=size,
                                         strides=tuple(s * item for s in stride), writeable=False)
  return np.ascontiguousarray(view)


def _rebuild_parameter(data: np.ndarray, requires_grad: bool = False,
                       backward_hooks: Any = None, *args: Any) -> np.ndarray:
  del requires_grad, backward_hooks, args
  return data


_ALLOWED: dict[tuple[str, str], Callable[..., Any]] = {
    ('collections', 'OrderedDict'): collections.OrderedDict,
    ('torch._utils', '_rebuild_tensor_v2'): _rebuild_tensor_v2,
    ('torch._utils', '_rebuild_parameter'): _rebuild_parameter,
}


class _Refused(Exception):
  """A global outside the allow-list; turned into a CheckpointError naming the file."""


class _StateDictUnpickler(pickle.Unpickler):
  """Resolves only allow-listed globals; tensors' storages are read from the zip on demand."""

  def __init__(self, file: Any, read_storage: Callable[[str, np.dtype, int], np.ndarray]):
    super().__init__(file)
    self._read_storage = read_storage
    self._storages: dict[str, np.ndarray] = {}

  def find_class(self, module: str, name: str) -> Any:
    if (module, name) in _ALLOWED:
      return _ALLOWED[(module, name)]
    if module == 'torch' and name in _STORAGE_DTYPES:
      return _StorageType(name)
    raise _Refused(f'{module}.{name}')

  def persistent_load(self, pid: Any) -> np.ndarray:
    # torch writes ('storage', storage_type, key, location, numel) for every storage.
    if (not isinstance(pid, tuple) or len(pid) != 5 or pid[0] != 'storage'
        or not isinstance(pid[1], _StorageType)):
      raise pickle.UnpicklingError(f'unexpected persistent id {pid!r}')
    _, storage_type, key, _, numel = pid
    key = str(key)
    if key not in self._storages:
      self._storages[key] = self._read_storage(key, storage_type.dtype, int(numel))
    return self._storages[key]


def _fix_advice() -> str:
  return ('a .pth state dict may hold only tensors and containers; save it with '
          'torch.save(model.state_dict()) or convert it to .safetensors')


def _load_pth(path: str) -> dict[str, np.ndarray]:
  if not zipfile.is_zipfile(path):
    raise errors.CheckpointError(
        f'{path}: not a zip archive, so not the format torch.save has written since torch 1.6 '
        '(a legacy .pth, or not a torch file at all); re-save it with torch>=1.6 as '
        'torch.save(model.state_dict(), path) or convert it to .safetensors.')
  with zipfile.ZipFile(path) as archive:
    names = archive.namelist()
    pickles = [n for n in names if n == 'data.pkl' or n.endswith('/data.pkl')]
    if len(pickles) != 1:
      raise errors.CheckpointError(f'{path}: a torch zip holds exactly one data.pkl, found '
                                   f'{len(pickles)}; this is not a torch.save file.')
    prefix = pickles[0][:-len('data.pkl')]
    byteorder = prefix + 'byteorder'
    big = byteorder in names and archive.read(byteorder).strip() == b'big'

    def read_storage(key: str, dtype: np.dtype, numel: int) -> np.ndarray:
      entry = f'{prefix}data/{key}'
      if entry not in names:
        raise errors.CheckpointError(f'{path}: the pickle refers to storage {entry!r}, which the '
                                     'archive lacks; the file is truncated or damaged.')
      raw = archive.read(entry)
      if len(raw) < numel * dtype.itemsize:
        raise errors.CheckpointError(f'{path}: storage {entry!r} holds {len(raw)} bytes, less than '
                                     f'its {numel} elements of {dtype} need; the file is damaged.')
      array = np.frombuffer(raw, dtype.newbyteorder('>') if big else dtype, count=numel)
      return array.astype(dtype) if big else array

    try:
      with archive.open(pickles[0]) as f:
        obj = _StateDictUnpickler(f, read_storage).load()
    except _Refused as e:
      raise errors.CheckpointError(f'{path}: refusing to unpickle {e}: {_fix_advice()}.') from None
    except errors.CheckpointError:
      raise
    except Exception as e:  # pylint: disable=broad-except
      raise errors.CheckpointError(f'{path}: cannot read its pickle ({type(e).__name__}: {e}); '
                                   f'{_fix_advice()}.') from None
  return _check_state_dict(path, obj)


def _check_state_dict(path: str, obj: Any) -> dict[str, np.ndarray]:
  if not isinstance(obj, Mapping):
    raise errors.CheckpointError(f'{path}: holds a {type(obj).__name__}, not a state dict; '
                                 f'{_fix_advice()}.')
  bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, np.ndarray)]
  if bad:
    raise errors.CheckpointError(
        f'{path}: entries {", ".join(repr(k) for k in bad[:3])} are not tensors (a checkpoint '
        "wrapping the state dict, e.g. {'model': ..., 'optimizer': ...}?); " f'{_fix_advice()}.')
  return dict(obj)


def _load_safetensors(path: str) -> dict[str, np.ndarray]:
  from safetensors import numpy as st_numpy  # pylint: disable=import-outside-toplevel
  try:
    return dict(st_numpy.load_file(path))
  except Exception as e:  # pylint: disable=broad-except
    raise errors.CheckpointError(f'{path}: not a readable .safetensors file '
                                 f'({type(e).__name__}: {e}).') from None


def load_state_dict(path: str) -> dict[str, np.ndarray]:
  """Reads a PyTorch state dict from `.safetensors` or a torch-zip `.pth`/`.pt`, without torch.

  Args:
    path: the file; its suffix picks the reader.

  Returns:
    {key: array} in the file's order (torch's `state_dict()` order for `.pth`, sorted for
    `.safetensors`), dtypes as stored (float32 weights, int64 `num_batches_tracked`, ...).

  Raises:
    CheckpointError: missing file, unknown suffix, a legacy (non-zip) `.pth`, a pickle naming
      anything but containers and tensors (nothing it names is ever called), a top level that is
      not a dict of tensors, or missing/short storage entries.
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise errors.CheckpointError(f'{path}: no such file; give a .safetensors or .pth state dict.')
  suffix = os.path.splitext(path)[1].lower()
  if suffix == SAFETENSORS_SUFFIX:
    return _load_safetensors(path)
  if suffix in PTH_SUFFIXES:
    return _load_pth(path)
  raise errors.CheckpointError(f'{path}: unknown suffix {suffix!r}; give a state dict saved as '
                               f'{SAFETENSORS_SUFFIX} or {"/".join(PTH_SUFFIXES)}.')


def save_safetensors(state: Mapping[str, np.ndarray], path: str) -> None:
  """Writes `state` as `.safetensors`, atomically: a reader sees the old file or the whole new one.

  Args:
    state: {key: array}; arrays are written C-contiguous with their dtypes.
    path: the destination; its directory must exist.
  """
  from safetensors import numpy as st_numpy  # pylint: disable=import-outside-toplevel
  path = os.fspath(path)
  # np.ascontiguousarray would turn 0-d tensors (num_batches_tracked) into shape [1].
  arrays = {str(k): np.array(v, order='C') for k, v in state.items()}
  directory = os.path.dirname(os.path.abspath(path))
  fd, tmp = tempfile.mkstemp(prefix='.' + os.path.basename(path) + '.', dir=directory)
  os.close(fd)
  try:
    st_numpy.save_file(arrays, tmp)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise
