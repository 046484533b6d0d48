"""A consistent copy of Ray Tune's experiment state, so ``--resume`` never restores a mixed state (ray-free).

Tune writes its state (``experiment_state-<session>.json``: the trials; ``search_gen_state-<session>.json``
and ``searcher-state-<session>.pkl``: the searcher, with how many trials it has created) into a driver
staging folder, then copies that folder to the experiment folder in a background thread, while the next save
may already be rewriting the staging files. A driver killed during a copy leaves files from different moments:
a searcher that has counted four trials beside a trial list that holds two. Restored, such a sweep ends with
two trials, believing it made four (seen in CI).

:func:`take` copies the files of one save (all ending in the same session stamp) right after Tune wrote them,
into ``<experiment>/sepray_tune_state`` (written to a temporary folder, then renamed in: :mod:`sepray.atomic`). :func:`restore` puts
that copy back in place of Tune's own files before ``Tuner.restore``. It is Tune's latest save, taken every
``TUNE_GLOBAL_CHECKPOINT_S``; a trial created after it is proposed again on resume (the seeded searcher is
restored to the same point) and reattaches to its MLflow run by signature.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from sepray.atomic import folder_written_atomically

SNAPSHOT_DIR = "sepray_tune_state"
_EXPERIMENT = re.compile(r"^experiment_state-(.+)\.json$")


def _session(folder: Path) -> str | None:
    """The session stamp of the newest experiment state in ``folder`` (stamps sort by time)."""
    stamps = [m.group(1) for p in folder.glob("experiment_state-*.json") if (m := _EXPERIMENT.match(p.name))]
    return max(stamps, default=None)


def _state_files(folder: Path, session: str) -> list[Path]:
    """Every top-level file of one save: ``<kind>-<session>.json|.pkl`` (not Tune's ``tmp-`` files)."""
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file()
        and not p.name.startswith("tmp-")
        and p.suffix in (".json", ".pkl")
        and p.stem.endswith(f"-{session}")
    )


def take(staging: Path, experiment: Path) -> bool:
    """Copy the newest complete save in ``staging`` to ``experiment/sepray_tune_state``; False if none yet."""
    staging, experiment = Path(staging), Path(experiment)
    session = _session(staging) if staging.is_dir() else None
    if session is None or not experiment.is_dir():
        return False
    files = _state_files(staging, session)
    with folder_written_atomically(experiment / SNAPSHOT_DIR) as tmp:
        for f in files:
            shutil.copy2(f, tmp / f.name)
    return True


def snapshot(experiment: Path) -> Path | None:
    """The last complete snapshot folder (the previous one if a crash came between the two renames)."""
    experiment = Path(experiment)
    aside = sorted(experiment.glob(f".old-{SNAPSHOT_DIR}-*/{SNAPSHOT_DIR}"), key=lambda p: p.stat().st_mtime)
    for folder in [experiment / SNAPSHOT_DIR, *reversed(aside)]:
        if folder.is_dir() and _session(folder) is not None:
            return folder
    return None


def restore(experiment: Path) -> str | None:
    """Replace Tune's state files in ``experiment`` by the snapshot; returns its session stamp (None: none)."""
    experiment = Path(experiment)
    folder = snapshot(experiment)
    if folder is None:
        return None
    session = _session(folder)
    files = _state_files(folder, session)
    kinds = {f.stem[: -len(session) - 1] for f in files}
    for p in experiment.iterdir():
        if p.is_file() and any(p.name.startswith(f"{k}-") or p.name.startswith(f"tmp-{k}-") for k in kinds):
            p.unlink()
    for f in files:
        shutil.copy2(f, experiment / f.name)
    return session
