"""Run a sweep spec: ``python sweeps/run.py SPEC.yaml [--address auto|HOST:PORT] [--resume] [--smoke-test]
[--set key=value ...]``. A thin wrapper over :func:`sepray.tuning.main`; see docs/sweeps.md."""

import sys

from sepray.tuning import main

if __name__ == "__main__":
    sys.exit(main())
