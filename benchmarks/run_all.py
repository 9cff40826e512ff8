"""Runs every benchmark in this folder in turn (`make bench`); each prints its own table."""
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))

if __name__ == '__main__':
  failed = []
  for name in sorted(os.listdir(HERE)):
    if name.startswith('bench_') and name.endswith('.py'):
      print(f'== {name}', flush=True)
      if subprocess.call([sys.executable, os.path.join(HERE, name)]) != 0:
        failed.append(name)
  sys.exit(1 if failed else 0)
