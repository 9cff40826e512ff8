"""Report helpers: image grids, labelled comparisons, PNG files, plots and the summary JSON."""
import json
import os

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from PIL import Image

from kd_jax import report


def test_image_grid_shape_dtype_range_and_border():
  images = np.full((5, 8, 6, 1), -1.0, np.float32)
  images[1] = 1.0
  grid = report.image_grid(images, ncols=3, pad=2)
  assert grid.dtype == np.uint8
  assert grid.shape == (2 * (8 + 2) + 2, 3 * (6 + 2) + 2, 1)
  assert grid[2:10, 2:8].max() == 0          # first image: -1 → 0
  assert grid[2:10, 10:16].min() == 255      # second image: +1 → 255
  assert np.all(grid[0:2] == 255) and np.all(grid[:, 0:2] == 255)  # border
  assert np.all(grid[12:20, 18:24] == 255)   # empty sixth tile is border-coloured


def test_image_grid_rgb_clips_and_few_images():
  images = np.linspace(-2, 2, 2 * 4 * 4 * 3).reshape(2, 4, 4, 3)
  grid = report.image_grid(images, ncols=8, pad=1)
  assert grid.shape == (4 + 2, 2 * 5 + 1, 3)  # only as wide as the images given
  assert grid.min() == 0 and grid.max() == 255
  with pytest.raises(ValueError, match='images must be'):
    report.image_grid(np.zeros((2, 4, 4, 2)), ncols=2)


def test_side_by_side_png_round_trips(tmp_path):
  rng = np.random.default_rng(0)
  teacher = rng.uniform(-1, 1, size=(4, 8, 8, 1))
  student = rng.uniform(-1, 1, size=(4, 8, 8, 3))
  picture = report.side_by_side([('teacher', teacher), ('student', student)], ncols=4)
  assert picture.dtype == np.uint8 and picture.ndim == 3 and picture.shape[-1] == 3
  block_h, block_w = 8 + 4, 4 * 10 + 2
  assert picture.shape[0] == 2 * block_h
  margin = picture.shape[1] - block_w
  assert margin > 10
  assert picture[:, :margin].min() < 128  # the labels were drawn
  np.testing.assert_array_equal(picture[block_h:, margin:], report.image_grid(student, 4))
  path = tmp_path / 'images' / 'grid.png'
  report.save_png(str(path), picture)
  with Image.open(path) as png:
    assert png.format == 'PNG'
    np.testing.assert_array_equal(np.asarray(png), picture)


def test_save_png_grayscale_and_rejects_floats(tmp_path):
  gray = report.image_grid(np.zeros((2, 4, 4, 1)), ncols=2)
  path = tmp_path / 'a' / 'b' / 'gray.png'
  report.save_png(str(path), gray)
  with Image.open(path) as png:
    np.testing.assert_array_equal(np.asarray(png), gray[..., 0])
  with pytest.raises(ValueError, match='uint8'):
    report.save_png(str(path), np.zeros((4, 4), np.float32))
  assert os.listdir(path.parent) == ['gray.png']  # no temp files left behind


def test_write_summary_round_trips_numpy_and_jax_values(tmp_path):
  cfg = ml_collections.ConfigDict({'name': 'cnn', 'width': 8})
  summary = {'zeta': np.float32(0.5), 'alpha': np.int64(3), 'acc': jnp.float32(0.25),
             'arr': np.arange(3), 'nested': {'ok': np.bool_(True), 'pair': (1, 2.5)},
             'model': cfg, 'psnr': float('inf'), 7: 'int key'}
  path = tmp_path / 'run' / 'summary.json'
  report.write_summary(str(path), summary)
  text = path.read_text()
  loaded = json.loads(text)
  assert loaded == {'zeta': 0.5, 'alpha': 3, 'acc': 0.25, 'arr': [0, 1, 2],
                    'nested': {'ok': True, 'pair': [1, 2.5]}, 'model': {'name': 'cnn', 'width': 8},
                    'psnr': float('inf'), '7': 'int key'}
  keys = [line.split('"')[1] for line in text.splitlines() if line.startswith('  "')]
  assert keys == sorted(keys)
  report.write_summary(str(path), {'step': 2})  # replaces the file whole
  assert json.loads(path.read_text()) == {'step': 2}
  assert os.listdir(path.parent) == ['summary.json']
