"""`python -m kd_jax.report WORKDIR... [--out report.html] [--title T]`: one HTML page over finished
runs (curves, grids, the size–quality–speed table, Pareto plots; see kd_jax.report.page)."""
import argparse
import os
import sys

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')  # before tensorboard pulls in TensorFlow

from kd_jax import errors  # pylint: disable=wrong-import-position
from kd_jax.report import page  # pylint: disable=wrong-import-position


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog='python -m kd_jax.report', description=__doc__)
  parser.add_argument('workdirs', nargs='+', help='finished runs (their --workdir)')
  parser.add_argument('--out', default='report.html', help='the HTML file to write')
  parser.add_argument('--title', default='kd_jax report')
  args = parser.parse_args(argv)
  try:
    path = page.write(args.workdirs, args.out, args.title)
  except errors.KDError as e:
    print(f'kd_jax: error: {e}', file=sys.stderr)
    return 2
  print(f'[kd_jax] report: {path}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
