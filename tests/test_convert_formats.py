"""State-dict readers: .safetensors and torch-zip .pth without torch, and the pickle allow-list."""
import io
import os
import pickle
import sys
import types
import zipfile

import numpy as np
import pytest

from conftest import golden_file
from kd_jax import errors
from kd_jax.convert import formats

PAIRS = [('mobilenet_v2_w05.pth', 'mobilenet_v2_w05.safetensors'),
         ('sg2ada_small_G.pth', 'sg2ada_small_G.safetensors'),
         ('sg2ada_small_D.pth', 'sg2ada_small_D.safetensors')]



@pytest.mark.parametrize('pth,safetensors', PAIRS)
def test_golden_pth_and_safetensors_load_identically(pth, safetensors):
  a = formats.load_state_dict(golden_file(pth))
  b = formats.load_state_dict(golden_file(safetensors))
  assert sorted(a) == sorted(b)
  for key in a:
    assert a[key].dtype == b[key].dtype and a[key].shape == b[key].shape, key
    assert np.array_equal(a[key], b[key]), key


def test_pth_keeps_state_dict_order():
  path = golden_file('mobilenet_v2_w05.pth')
  with open(golden_file('mobilenet_v2_w05_keys.txt')) as f:
    keys = [line.split('\t')[0] for line in f if line.strip() and not line.startswith('#')]
  state = formats.load_state_dict(path)
  assert list(state) == keys
  assert state['features.0.1.num_batches_tracked'].shape == ()
  assert state['features.0.1.num_batches_tracked'].dtype == np.int64


# A torch.save zip, written with the standard library: the pickle names torch's globals, which are
# stand-ins registered in sys.modules only while pickling (torch is not needed, nor imported).
_STORAGE_NAMES = {np.dtype(np.float32): 'FloatStorage', np.dtype(np.int64): 'LongStorage',
                  np.dtype(np.float16): 'HalfStorage'}


class _Tensor:
  def __init__(self, storage, offset, size, stride):
    self.args = (storage, offset, size, stride)


def _write_pth(path, entries, *, skip_storages=(), top=None, prefix='archive'):
  """entries: {key: (flat storage array, offset, size, stride)}; storages are shared by identity."""
  fake_torch = types.ModuleType('torch')
  fake_utils = types.ModuleType('torch._utils')

  def _rebuild_tensor_v2(*args):
    raise AssertionError('never called while pickling')
  _rebuild_tensor_v2.__module__ = 'torch._utils'
  _rebuild_tensor_v2.__qualname__ = '_rebuild_tensor_v2'
  fake_utils._rebuild_tensor_v2 = _rebuild_tensor_v2
  storage_types = {}
  for name in _STORAGE_NAMES.values():
    cls = type(name, (), {'__module__': 'torch'})
    setattr(fake_torch, name, cls)
    storage_types[name] = cls
  storages, data = {}, {}

  class Pickler(pickle.Pickler):
    def persistent_id(self, obj):
      if isinstance(obj, np.ndarray):
        key = storages.setdefault(id(obj), str(len(storages)))
        data[key] = obj
        return ('storage', storage_types[_STORAGE_NAMES[obj.dtype]], key, 'cpu', obj.size)
      return None

    def reducer_override(self, obj):
      if isinstance(obj, _Tensor):
        storage, offset, size, stride = obj.args
        return _rebuild_tensor_v2, (storage, offset, size, stride, False, {})
      return NotImplemented

  saved = {m: sys.modules.get(m) for m in ('torch', 'torch._utils')}
  sys.modules.update({'torch': fake_torch, 'torch._utils': fake_utils})
  try:
    buf = io.BytesIO()
    obj = top if top is not None else {k: _Tensor(*v) for k, v in entries.items()}
    Pickler(buf, protocol=2).dump(obj)
  finally:
    for m, mod in saved.items():
      if mod is None:
        sys.modules.pop(m, None)
      else:
        sys.modules[m] = mod
  with zipfile.ZipFile(path, 'w') as z:
    z.writestr(f'{prefix}/data.pkl', buf.getvalue())
    z.writestr(f'{prefix}/byteorder', 'little')
    for key, array in data.items():
      if key not in skip_storages:
        z.writestr(f'{prefix}/data/{key}', array.tobytes())
    z.writestr(f'{prefix}/version', '3\n')


def test_pth_strided_views_offsets_and_shared_storage(tmp_path):
  flat = np.arange(24, dtype=np.float32)
  counts = np.array([7], np.int64)
  half = np.arange(6, dtype=np.float16)
  path = str(tmp_path / 'views.pth')
  _write_pth(path, {
      'w': (flat, 0, (2, 3, 4), (12, 4, 1)),
      'transposed': (flat, 0, (4, 3), (1, 4)),      # a .T view: non-contiguous strides
      'offset': (flat, 5, (3,), (2,)),               # shares w's storage, starts at element 5
      'count': (counts, 0, (), ()),
      'half': (half, 1, (2, 2), (2, 1)),
  })
  state = formats.load_state_dict(path)
  np.testing.assert_array_equal(state['w'], flat.reshape(2, 3, 4))
  np.testing.assert_array_equal(state['transposed'], flat[:12].reshape(3, 4).T)
  np.testing.assert_array_equal(state['offset'], flat[5:11:2])
  assert state['count'].shape == () and state['count'].dtype == np.int64 and state['count'] == 7
  assert state['half'].dtype == np.float16
  np.testing.assert_array_equal(state['half'], half[1:5].reshape(2, 2))


class _Evil:
  def __init__(self, command):
    self.command = command

  def __reduce__(self):
    return os.system, (self.command,)


@pytest.mark.parametrize('payload', ['system', 'eval'])
def test_pth_carrying_code_is_refused_and_nothing_runs(tmp_path, payload):
  marker = tmp_path / 'pwned'
  path = str(tmp_path / 'evil.pth')
  buf = io.BytesIO()
  if payload == 'system':
    pickle.dump({'weight': _Evil(f'touch {marker}')}, buf, protocol=2)
  else:
    # builtins.eval('...') spelled out in opcodes: GLOBAL, the argument tuple, REDUCE.
    buf.write(b'\x80\x02cbuiltins\neval\nX\x0b\x00\x00\x00print("hi")\x85R.')
  with zipfile.ZipFile(path, 'w') as z:
    z.writestr('archive/data.pkl', buf.getvalue())
  with pytest.raises(errors.CheckpointError) as info:
    formats.load_state_dict(path)
  message = str(info.value)
  name = f'{os.system.__module__}.system' if payload == 'system' else 'builtins.eval'
  assert message == (f'{path}: refusing to unpickle {name}: a .pth state dict may hold only '
                     'tensors and containers; save it with torch.save(model.state_dict()) or '
                     'convert it to .safetensors.')
  assert not marker.exists()


def test_pth_bad_files_get_one_clear_error(tmp_path):
  legacy = tmp_path / 'legacy.pth'
  legacy.write_bytes(pickle.dumps({'w': 1}))
  with pytest.raises(errors.CheckpointError, match='not a zip archive.*legacy'):
    formats.load_state_dict(str(legacy))

  module = str(tmp_path / 'module.pth')
  _write_pth(module, {}, top=['not', 'a', 'dict'])
  with pytest.raises(errors.CheckpointError, match='holds a list, not a state dict'):
    formats.load_state_dict(module)

  nested = str(tmp_path / 'nested.pth')
  _write_pth(nested, {}, top={'model': {'w': 1}, 'epoch': 3})
  with pytest.raises(errors.CheckpointError, match="entries 'model', 'epoch' are not tensors"):
    formats.load_state_dict(nested)

  truncated = str(tmp_path / 'truncated.pth')
  _write_pth(truncated, {'w': (np.zeros(4, np.float32), 0, (4,), (1,))}, skip_storages=('0',))
  with pytest.raises(errors.CheckpointError, match="storage 'archive/data/0'.*lacks"):
    formats.load_state_dict(truncated)

  with pytest.raises(errors.CheckpointError, match='no such file'):
    formats.load_state_dict(str(tmp_path / 'absent.pth'))
  other = tmp_path / 'weights.bin'
  other.write_bytes(b'x')
  with pytest.raises(errors.CheckpointError, match="unknown suffix '.bin'"):
    formats.load_state_dict(str(other))


def test_save_safetensors_round_trips_and_is_atomic(tmp_path):
  state = {'a.weight': np.arange(6, dtype=np.float32).reshape(2, 3).T,  # non-contiguous
           'a.num_batches_tracked': np.array(3, np.int64)}
  path = str(tmp_path / 'out.safetensors')
  formats.save_safetensors(state, path)
  back = formats.load_state_dict(path)
  assert sorted(back) == sorted(state)
  for key, value in state.items():
    assert back[key].dtype == value.dtype and back[key].shape == value.shape
    np.testing.assert_array_equal(back[key], value)
  assert os.listdir(tmp_path) == ['out.safetensors']  # no temporary file left behind

  with pytest.raises(Exception):
    formats.save_safetensors({'bad': object()}, path)
  assert os.listdir(tmp_path) == ['out.safetensors']
  np.testing.assert_array_equal(formats.load_state_dict(path)['a.weight'], state['a.weight'])


def test_pth_view_outside_its_storage_is_refused(tmp_path):
  path = str(tmp_path / 'overrun.pth')
  _write_pth(path, {'w': (np.zeros(4, np.float32), 2, (3,), (1,))})
  with pytest.raises(errors.CheckpointError, match='lies outside its storage of 4 elements'):
    formats.load_state_dict(path)
