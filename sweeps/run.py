"""Run a sweep spec: ``python sweeps/run.py SPEC.yaml [--address auto|HOST:PORT] [--resume] [--smoke-test]
[--set key=value ...] [--num-cpus N]``, the same command as ``sepray sweep SPEC ...``; see docs/sweeps.md."""

import sys

from sepray.cli import main

if __name__ == "__main__":
    sys.exit(main(["sweep", *sys.argv[1:]]))
