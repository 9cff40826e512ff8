"""The Colab notebook runs top to bottom (tiny mode) against the shipped teachers."""
import os

NOTEBOOK = os.path.join(os.path.dirname(os.path.dirname(__file__)), 'notebooks',
                        'kd_jax_colab.ipynb')


def test_colab_notebook_executes_in_tiny_mode(tiny_data_dir, tmp_path, monkeypatch):
  import nbclient  # pylint: disable=import-outside-toplevel
  import nbformat  # pylint: disable=import-outside-toplevel
  from kd_jax import pretrained  # pylint: disable=import-outside-toplevel
  missing = {'fashion_mnist/classifier', 'fashion_mnist/dcgan'} - set(pretrained.names())
  assert not missing, f'the notebook needs the shipped teachers {sorted(missing)}'
  nb = nbformat.read(NOTEBOOK, as_version=4)
  # The kernel inherits this environment: tiny mode, the tiny dataset, a scratch workdir.
  monkeypatch.setenv('KD_JAX_NOTEBOOK_TINY', '1')
  monkeypatch.setenv('KD_JAX_NOTEBOOK_DATA_DIR', tiny_data_dir)
  monkeypatch.setenv('KD_JAX_NOTEBOOK_WORKDIR', str(tmp_path / 'runs'))
  client = nbclient.NotebookClient(nb, timeout=600, kernel_name='python3',
                                   resources={'metadata': {'path': os.path.dirname(NOTEBOOK)}})
  client.execute()
  outputs = [o for cell in nb.cells if cell.cell_type == 'code' for o in cell.get('outputs', [])]
  text = ''.join(o.get('text', '') for o in outputs if o.get('output_type') == 'stream')
  assert 'tiny mode' in text
  assert 'student top-1' in text and 'agreement' in text
  assert 'pretrained:fashion_mnist/dcgan: ' in text
  # The teacher-vs-student grid is shown inline as a PNG.
  assert any('image/png' in o.get('data', {}) for o in outputs)
  assert os.path.isdir(tmp_path / 'runs' / 'distilled_generator_tiny' / 'images')
