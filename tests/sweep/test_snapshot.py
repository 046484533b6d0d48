"""The consistent copy of Tune's experiment state that --resume restores (file level, no Ray)."""

from __future__ import annotations

from pathlib import Path

from sepray.sweep import snapshot as tune_snapshot

OLD, NEW = "2026-11-25_01-00-00", "2026-11-25_02-00-00"
KINDS = ("experiment_state-{}.json", "search_gen_state-{}.json", "searcher-state-{}.pkl")


def _save(folder: Path, session: str, tag: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for kind in KINDS:
        (folder / kind.format(session)).write_text(f"{tag} {kind}")


def test_take_copies_one_save_and_restore_replaces_a_mixed_state(tmp_path):
    staging, exp = tmp_path / "staging", tmp_path / "exp"
    exp.mkdir()
    assert not tune_snapshot.take(staging, exp)  # nothing saved yet
    _save(staging, OLD, "first")
    _save(staging, NEW, "second")
    (staging / f"tmp-experiment_state-{NEW}.json").write_text("half written")
    assert tune_snapshot.take(staging, exp)
    snap = exp / tune_snapshot.SNAPSHOT_DIR
    assert sorted(p.name for p in snap.iterdir()) == sorted(k.format(NEW) for k in KINDS)

    # Tune's own copy in the experiment folder mixes two saves: the trial list of one, the searcher of another
    _save(exp, OLD, "first")
    (exp / f"search_gen_state-{NEW}.json").write_text("third")
    (exp / "sepray_sweep.json").write_text("ours")
    (exp / "trial_dir").mkdir()
    assert tune_snapshot.restore(exp) == NEW
    state = sorted(p.name for p in exp.iterdir() if p.is_file())
    assert state == sorted([*(k.format(NEW) for k in KINDS), "sepray_sweep.json"])
    for kind in KINDS:
        assert (exp / kind.format(NEW)).read_text() == f"second {kind}"
    assert (exp / "trial_dir").is_dir()


def test_a_later_take_replaces_the_snapshot_and_a_leftover_old_copy_is_used(tmp_path):
    staging, exp = tmp_path / "staging", tmp_path / "exp"
    exp.mkdir()
    _save(staging, OLD, "first")
    tune_snapshot.take(staging, exp)
    _save(staging, NEW, "second")
    tune_snapshot.take(staging, exp)
    assert not list(exp.glob(".old-*")) and not list(exp.glob(".tmp-*"))
    assert tune_snapshot.snapshot(exp) == exp / tune_snapshot.SNAPSHOT_DIR
    # a crash between the two renames leaves only the previous copy, moved aside
    aside = exp / f".old-{tune_snapshot.SNAPSHOT_DIR}-x"
    aside.mkdir()
    (exp / tune_snapshot.SNAPSHOT_DIR).rename(aside / tune_snapshot.SNAPSHOT_DIR)
    assert tune_snapshot.restore(exp) == NEW


def test_restore_without_snapshot_leaves_tunes_files(tmp_path):
    _save(tmp_path, OLD, "first")
    assert tune_snapshot.restore(tmp_path) is None
    assert len(list(tmp_path.iterdir())) == len(KINDS)
