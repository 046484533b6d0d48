"""Fresh MLflow sqlite stores for tests, fast: the schema is made once per test process (mlflow's migrations
take seconds) and copied for each store. A copy holds no experiment: sepray creates its own, with its
artifact location beside the copy."""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path


@functools.cache
def _template() -> Path:
    from mlflow import MlflowClient

    folder = Path(tempfile.mkdtemp(prefix="sepray-test-store-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    MlflowClient(f"sqlite:///{folder / 'mlflow.db'}").search_experiments()  # creates the schema
    return folder / "mlflow.db"


def fresh_store(folder: Path) -> str:
    """A new, empty tracking store at ``folder/mlflow.db``; its URI."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(_template(), folder / "mlflow.db")
    return f"sqlite:///{folder / 'mlflow.db'}"
