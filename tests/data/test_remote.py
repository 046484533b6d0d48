"""`data.path` as a URI: a real S3 API server on the loopback (moto's standalone server, tests/s3_server.py) holds a
generated dataset; loading it through s3:// copies it to the node's cache once (under a lock, verified, marked
complete last), later loads read the copy, also with the server gone; a missing bucket, a wrong secret and a
server that is down are each one line naming the URI. `file://` reads the folder in place."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sepray.config import DataConfig
from sepray.data import clear_memo, load_splits, remote
from sepray.data.layouts import DatasetError
from sepray.sweep.driver import check_data
from sepray.sweep.spec import load_spec
from tests.data.fixtures import mir1k_folder
from tests.s3_server import s3_server

REPO = Path(__file__).resolve().parents[2]
SR = 8000
CLIPS = {"abjones": {1: 3}, "amy": {1: 3}, "bobon": {1: 2}}  # 8 clips of 3 singers


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    work = tmp_path_factory.mktemp("s3")
    clips = mir1k_folder(work / "clips", CLIPS, seconds=0.5, sr=SR)
    with s3_server(work) as server:
        server.uri = server.upload(clips, "sepray-data", "datasets/mir1k")
        server.clips = clips
        yield server


@pytest.fixture
def s3_env(s3, monkeypatch):
    for key, value in s3.env().items():
        monkeypatch.setenv(key, value)
    return s3


@pytest.fixture(autouse=True)
def _fresh_memo():
    clear_memo()
    yield
    clear_memo()


def data(path: str, cache: Path) -> DataConfig:
    return DataConfig(path=path, cache_dir=str(cache), sample_rate=SR)


def song_values(splits) -> dict[str, dict[str, list[str]]]:
    return {split: {s.name: [s.mix.sum().item(), s.sources["vocals"].sum().item()] for s in v} for split, v in splits.items()}  # fmt: skip


def test_s3_root_is_copied_once_verified_then_loaded_from_the_copy_without_the_server(
    s3_env, tmp_path, monkeypatch
):
    s3, cache = s3_env, tmp_path / "cache"
    gets_before = len(s3.object_gets())
    splits = load_splits(data(s3.uri, cache))
    local = load_splits(data(str(s3.clips), tmp_path / "local-cache"))
    assert song_values(splits) == song_values(local)  # the same songs, splits and samples as the folder's
    assert sum(len(v) for v in splits.values()) == 8
    (copy,) = remote.copies_of(s3.uri, cache)
    assert remote.is_complete(copy) and sorted(remote.read_manifest(copy)["files"]) == sorted(
        p.name for p in s3.clips.iterdir()
    )
    assert splits["train"][0].meta["folder"].startswith(str(copy))  # trained from the node's copy
    assert len(s3.object_gets()) - gets_before == 8  # every file once

    clear_memo()
    load_splits(data(s3.uri, cache))
    assert len(s3.object_gets()) - gets_before == 8  # listed again, nothing copied again

    # the server gone (nothing listens at its port any more): the node's copy, with a warning
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{_closed_port()}")
    clear_memo()
    again = load_splits(data(s3.uri, cache))
    assert song_values(again) == song_values(local)
    # a local sweep goes on from this machine's copy (a note); on a cluster the other nodes need the URI
    spec = load_spec(str(REPO / "sweeps" / "quickstart.yaml"), [f"data.path={s3.uri}"], smoke_test=True)
    spec = dataclasses.replace(
        spec, fixed={**spec.fixed, "data": {**spec.fixed["data"], "cache_dir": str(cache)}}
    )
    lines = []
    check_data(spec, on_cluster=False, log=lines.append)
    assert len(lines) == 1 and "cannot reach the server" in lines[0] and f"copy {copy / 'data'}" in lines[0]
    with pytest.raises(DatasetError, match="cannot reach the server"):
        check_data(spec, on_cluster=True, log=lines.append)


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize(
    "case, expected",
    [
        ("missing bucket", "no such bucket"),
        ("wrong secret", "access denied"),
        ("server down", "cannot reach the server"),
    ],
)
def test_unusable_remote_is_one_line_naming_the_uri(s3_env, tmp_path, monkeypatch, case, expected):
    uri = s3_env.uri
    if case == "missing bucket":
        uri = "s3://no-such-bucket/datasets/mir1k"
    elif case == "wrong secret":
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    else:
        monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{_closed_port()}")
    started = time.monotonic()
    with pytest.raises(DatasetError) as info:
        load_splits(data(uri, tmp_path / "cache"))
    message = str(info.value)
    assert message.startswith(f"{uri}: ") and expected in message and "\n" not in message, message
    assert time.monotonic() - started < 30  # a few retries, never minutes
    assert not (tmp_path / "cache" / "remote").exists() or not remote.copies_of(uri, tmp_path / "cache")

    # the sweep driver says the same before anything starts (Ray, the MLflow parent run, a trial)
    spec = load_spec(str(REPO / "sweeps" / "quickstart.yaml"), [f"data.path={uri}"], smoke_test=True)
    with pytest.raises(DatasetError) as info:
        check_data(spec, on_cluster=False, log=lambda line: None)
    assert str(info.value) == message


def test_trials_starting_together_on_a_node_copy_it_once(s3_env, tmp_path):
    cache, gets_before = tmp_path / "cache", len(s3_env.object_gets())
    code = "import sys; from sepray.data import remote; print(remote.fetch(sys.argv[1], sys.argv[2]))"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [
        subprocess.Popen([sys.executable, "-c", code, s3_env.uri, str(cache)], env=env, stdout=subprocess.PIPE, text=True)
        for _ in range(3)
    ]  # fmt: skip
    folders = {p.communicate(timeout=120)[0].strip() for p in procs}
    assert all(p.returncode == 0 for p in procs)
    assert len(folders) == 1 and Path(folders.pop()).is_dir()
    assert len(s3_env.object_gets()) - gets_before == 8  # one copy, not three


def test_half_copied_or_damaged_copy_is_never_used(s3_env, tmp_path):
    cache = tmp_path / "cache"
    listing = remote.list_remote(s3_env.uri)
    wrong = remote.Listing(
        listing.uri, (*listing.files[:-1], remote.RemoteFile(listing.files[-1].path, 1, None))
    )
    folder = cache / "remote" / "broken"
    with pytest.raises(remote.RemoteDataError, match="the listing said 1"):
        remote._copy(wrong, folder, None)
    assert not folder.exists() and not list((cache / "remote").glob(".tmp-*"))  # nothing half-written left

    data_dir = remote.fetch(s3_env.uri, cache)
    victim = next(data_dir.iterdir())
    victim.write_bytes(victim.read_bytes()[:-10])  # truncated after the copy: the copy is incomplete
    assert not remote.is_complete(data_dir.parent)
    assert remote.fetch(s3_env.uri, cache) == data_dir and remote.is_complete(data_dir.parent)  # copied again


def test_a_changed_remote_dataset_is_copied_again(s3_env, tmp_path):
    cache = tmp_path / "cache"
    s3 = s3_env
    uri = s3.upload(s3.clips, "sepray-data", "datasets/changing")
    first = remote.fetch(uri, cache)
    s3.client().put_object(Bucket="sepray-data", Key="datasets/changing/extra_1_01.wav", Body=b"RIFF")
    second = remote.fetch(uri, cache)
    assert second != first and (second / "extra_1_01.wav").is_file()
    assert not first.exists()  # the older copy of that URI is removed
    assert remote.copies_of(uri, cache) == [second.parent]


def test_file_uri_reads_the_folder_in_place(tmp_path):
    root = mir1k_folder(tmp_path / "clips", CLIPS, seconds=0.25, sr=SR)
    cache = tmp_path / "cache"
    via_uri = load_splits(data(f"file://{root}", cache))
    clear_memo()
    direct = load_splits(data(str(root), cache))
    assert song_values(via_uri) == song_values(direct)
    assert via_uri["train"][0].meta["folder"].startswith(str(root))
    assert not (cache / "remote").exists()  # nothing copied
    with pytest.raises(DatasetError, match="no such dataset folder"):
        load_splits(data(f"file://{tmp_path}/missing", cache))
