"""Dataset roots given as URIs: each node copies a remote dataset into its local cache once, then reads it there.

``data.path`` (or a root of a list) may be

* a local path, or ``file:///abs/path``: read in place (nothing is copied);
* ``s3://bucket/prefix``, ``gs://...``, ``hdfs://...``: any file system ``pyarrow.fs`` opens (it comes with
  Ray), with credentials and endpoint from the usual environment (``AWS_ACCESS_KEY_ID``,
  ``AWS_SECRET_ACCESS_KEY``, ``AWS_PROFILE``, an instance role, ``AWS_ENDPOINT_URL`` for an S3-compatible
  server, ``GOOGLE_APPLICATION_CREDENTIALS``), else any protocol fsspec knows (its package installed).

A remote root is listed (every file under it, with size and modification time) and copied once per node to
``<cache>/remote/<uri digest>-<listing digest>/data/``, under a file lock (trials starting together on one node
wait for one copy), into a temporary folder renamed into place; every file's size is checked after the copy and
a manifest (``.complete``) is written last, so a half-copied dataset is never used. The listing digest names the
copy, so a changed remote dataset is copied again (and the older copy of that URI deleted). When the remote cannot
be listed, the newest complete copy of the URI on this node is used (a warning); without one, the error is one
line naming the URI. The run config keeps the URI, never the local copy's path.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from sepray.atomic import folder_written_atomically
from sepray.data.cache import file_lock
from sepray.data.layouts import DatasetError

log = logging.getLogger(__name__)

REMOTE_DIR = "remote"  # under the cache root
DATA_DIR = "data"  # inside one copy: the dataset's files, as under the URI
MANIFEST = ".complete"  # inside one copy, written last: uri, files and sizes, when and where it was copied
# listing a remote root that has not answered by then is an error (GCS would retry for minutes)
LIST_TIMEOUT_S = 60.0
BUCKET_SCHEMES = ("s3", "gs", "gcs")  # the URI's host is a bucket
COPY_THREADS = 8  # object stores answer one request at a time per connection: copy several files at once
CHUNK = 8 << 20


class RemoteDataError(DatasetError):
    """A remote dataset root that cannot be listed or copied; one line naming the URI and the reason."""


def is_uri(path: str) -> bool:
    """True for ``scheme://...`` (``s3://``, ``gs://``, ``file://``, ...)."""
    scheme, sep, _ = str(path).partition("://")
    return bool(sep) and scheme.isascii() and scheme.replace("+", "").replace("-", "").isalnum()


def is_remote(path: str) -> bool:
    """A URI that is copied to the node (anything but ``file://``)."""
    return is_uri(path) and not str(path).lower().startswith("file://")


def file_uri_path(uri: str) -> Path:
    """``file:///abs/path`` (or ``file://localhost/abs/path``) -> the local path."""
    parts = urlsplit(uri)
    if parts.netloc not in ("", "localhost"):
        raise DatasetError(f"{uri}: a file:// URI names a path on this machine: file:///absolute/path")
    return Path(unquote(parts.path))


def local_root(path: str, cache_dir: Path, log_line: Callable[[str], None] | None = None) -> Path:
    """The local folder of a dataset root: a path as it is, ``file://`` as its path, a remote URI copied into
    ``cache_dir`` once (see the module docstring)."""
    if not is_uri(path):
        return Path(path)
    if not is_remote(path):
        return file_uri_path(path)
    return fetch(path, cache_dir, log_line)


# ----------------------------------------------------------------------------------------------------------
# listing


@dataclass(frozen=True)
class RemoteFile:
    path: str  # relative to the root, '/'-separated
    size: int
    mtime_ns: int | None  # None when the file system does not say


@dataclass(frozen=True)
class Listing:
    uri: str
    files: tuple[RemoteFile, ...]

    @property
    def bytes(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def digest(self) -> str:
        """Changes when a file is added, removed, resized or rewritten."""
        rows = [[f.path, f.size, f.mtime_ns] for f in self.files]
        return hashlib.sha1(json.dumps(rows).encode()).hexdigest()[:12]


def open_filesystem(uri: str):
    """(pyarrow FileSystem, path inside it) for ``uri``: pyarrow's own file systems, else fsspec's."""
    import pyarrow as pa
    import pyarrow.fs as pafs

    try:
        return pafs.FileSystem.from_uri(uri)
    except pa.ArrowInvalid as exc:
        if "Unrecognized filesystem type" not in str(exc):
            raise RemoteDataError(f"{uri}: {_reason(exc)}") from None
    except (OSError, pa.ArrowException) as exc:  # e.g. S3's bucket region cannot be resolved
        raise RemoteDataError(f"{uri}: {_reason(exc)}") from None
    try:
        import fsspec

        fs, path = fsspec.core.url_to_fs(uri)
    except ImportError as exc:  # fsspec knows the protocol, its package is not installed
        raise RemoteDataError(f"{uri}: {_first_line(exc)}") from None
    except ValueError as exc:
        raise RemoteDataError(
            f"{uri}: unknown URI scheme ({_first_line(exc)}); expected a local path, file://, s3://, gs:// or "
            "another file system pyarrow or fsspec opens"
        ) from None
    return pafs.PyFileSystem(pafs.FSSpecHandler(fs)), path


def list_remote(uri: str, timeout: float | None = None) -> Listing:
    """Every file under ``uri`` with its size; RemoteDataError (one line) when it cannot be listed within
    ``timeout`` seconds (default :data:`LIST_TIMEOUT_S`), has no files, or is a file."""
    timeout = LIST_TIMEOUT_S if timeout is None else timeout
    result: dict = {}

    def run() -> None:
        try:
            result["listing"] = _list(uri)
        except BaseException as exc:  # handed to the caller's thread
            result["error"] = exc

    worker = threading.Thread(target=run, name="sepray-list-remote", daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        raise RemoteDataError(f"{uri}: no answer within {timeout:.0f} s; is the server reachable from here?")
    if "error" in result:
        raise result["error"]
    return result["listing"]


def _list(uri: str) -> Listing:
    import pyarrow.fs as pafs

    fs, base = open_filesystem(uri)
    base = base.rstrip("/")
    try:
        infos = fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
    except (OSError, ValueError) as exc:
        raise RemoteDataError(f"{uri}: {_reason(exc)}") from None
    files = []
    for info in infos:
        if info.type != pafs.FileType.File:
            continue
        rel = info.path[len(base) :].lstrip("/") if info.path.startswith(base) else info.path
        files.append(RemoteFile(rel, int(info.size or 0), info.mtime_ns))
    if not files:
        kind = _kind(fs, base)
        if kind == pafs.FileType.File:
            raise RemoteDataError(f"{uri}: a file; data.path names a dataset root (a folder of songs)")
        bucket = urlsplit(uri).netloc
        if urlsplit(uri).scheme in BUCKET_SCHEMES and _kind(fs, bucket) == pafs.FileType.NotFound:
            raise RemoteDataError(f"{uri}: no such bucket ({bucket})")
        raise RemoteDataError(f"{uri}: no such dataset folder (no files under it)")
    return Listing(uri, tuple(sorted(files, key=lambda f: f.path)))


def _kind(fs, path: str):
    try:
        return fs.get_file_info(path).type
    except (OSError, ValueError):
        return None


def _first_line(exc: BaseException) -> str:
    """The first line of an error, without the request id object stores append."""
    text = str(exc).strip()
    text = text.splitlines()[0] if text else type(exc).__name__
    return re.sub(r"\s*\(Request ID: [^)]*\)", "", text)


def _reason(exc: BaseException) -> str:
    """A remote file system's error as a short reason with the remedy, one line."""
    text = _first_line(exc)
    upper = text.upper()
    denied = ("ACCESS_DENIED", "ACCESSDENIED", "FORBIDDEN", "INVALIDACCESSKEY", "SIGNATURE_DOES_NOT_MATCH")
    if any(word in upper for word in denied):
        return (
            f"access denied ({text}); check the credentials: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or "
            "AWS_PROFILE (GOOGLE_APPLICATION_CREDENTIALS for gs://), or the node's instance role"
        )
    if "NO_SUCH_BUCKET" in upper or "NOSUCHBUCKET" in upper:
        return f"no such bucket ({text})"
    if "NETWORK_CONNECTION" in upper or "COULD NOT CONNECT" in upper or "RESOLVE HOST" in upper:
        return f"cannot reach the server ({text}); for an S3-compatible server set AWS_ENDPOINT_URL"
    if "HTTP STATUS 5" in upper:
        return f"the server failed the request ({text}); are credentials set (AWS_ACCESS_KEY_ID ...)?"
    return text


# ----------------------------------------------------------------------------------------------------------
# the node's copy


def uri_digest(uri: str) -> str:
    return hashlib.sha1(uri.rstrip("/").encode()).hexdigest()[:16]


def copies_of(uri: str, cache_dir: Path) -> list[Path]:
    """This node's complete copies of ``uri`` (folders holding a manifest), newest first."""
    base = Path(cache_dir) / REMOTE_DIR
    found = []
    for folder in base.glob(f"{uri_digest(uri)}-*"):
        manifest = read_manifest(folder)
        if manifest is not None and manifest.get("uri") == uri.rstrip("/"):
            found.append((manifest.get("copied_at", 0.0), folder))
    return [folder for _, folder in sorted(found, key=lambda item: item[0], reverse=True)]


def read_manifest(folder: Path) -> dict | None:
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) and isinstance(manifest.get("files"), dict) else None


def is_complete(folder: Path) -> bool:
    """The manifest is there and every file it lists has its size (a cheap check: one stat per file)."""
    manifest = read_manifest(folder)
    if manifest is None:
        return False
    data = folder / DATA_DIR
    for rel, size in manifest["files"].items():
        try:
            if (data / rel).stat().st_size != size:
                return False
        except OSError:
            return False
    return True


def fetch(uri: str, cache_dir: Path, log_line: Callable[[str], None] | None = None) -> Path:
    """The local folder holding this node's copy of ``uri``, copied now if this node has no copy of what the
    remote holds. When the remote cannot be listed, the newest complete copy (a warning); else the one-line
    RemoteDataError."""
    uri = uri.rstrip("/")
    cache_dir = Path(cache_dir)
    try:
        listing = list_remote(uri)
    except RemoteDataError as exc:
        for folder in copies_of(uri, cache_dir):
            if is_complete(folder):
                log.warning("%s; training from this node's copy %s", exc, folder)
                return folder / DATA_DIR
        raise
    folder = cache_dir / REMOTE_DIR / f"{uri_digest(uri)}-{listing.digest}"
    if is_complete(folder):
        return folder / DATA_DIR
    with file_lock(cache_dir / REMOTE_DIR / f".{uri_digest(uri)}.lock"):
        if not is_complete(folder):  # another process may have copied it while this one waited
            # what a copier killed mid-copy left (no other process copies this URI while the lock is held)
            for stale in folder.parent.glob(f".tmp-{uri_digest(uri)}-*"):
                shutil.rmtree(stale, ignore_errors=True)
            _copy(listing, folder, log_line)
            for old in copies_of(uri, cache_dir):
                if old != folder:
                    shutil.rmtree(old, ignore_errors=True)
    return folder / DATA_DIR


def _copy(listing: Listing, folder: Path, log_line: Callable[[str], None] | None) -> None:
    """Copy every file of ``listing`` into ``folder`` (all or nothing), checking sizes; manifest last."""
    uri = listing.uri
    folder.parent.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(folder.parent).free
    if listing.bytes > free:
        raise RemoteDataError(
            f"{uri}: {listing.bytes / 1e9:.2f} GB to copy, {free / 1e9:.2f} GB free in {folder.parent}; "
            "free space there or set SEPRAY_CACHE / data.cache_dir to a larger disk"
        )
    say = log_line or log.info
    say(f"data: copying {uri} ({len(listing.files)} files, {listing.bytes / 1e6:.1f} MB) to {folder}")
    started = time.monotonic()
    fs, base = open_filesystem(uri)
    base = base.rstrip("/")
    with folder_written_atomically(folder) as tmp:

        def one(entry: RemoteFile) -> None:
            target = tmp / DATA_DIR / entry.path
            target.parent.mkdir(parents=True, exist_ok=True)
            source = f"{base}/{entry.path}"
            try:
                with fs.open_input_stream(source) as src, open(target, "wb") as out:
                    while chunk := src.read(CHUNK):
                        out.write(chunk)
            except (OSError, ValueError) as exc:
                raise RemoteDataError(f"{uri}/{entry.path}: cannot copy it: {_reason(exc)}") from None
            got = target.stat().st_size
            if got != entry.size:
                raise RemoteDataError(
                    f"{uri}/{entry.path}: copied {got} bytes, the listing said {entry.size}; did it change "
                    "while it was copied? Run again"
                )
            if entry.mtime_ns is not None:
                os.utime(target, ns=(entry.mtime_ns, entry.mtime_ns))

        pool = ThreadPoolExecutor(COPY_THREADS, thread_name_prefix="sepray-copy")
        try:
            for future in [pool.submit(one, entry) for entry in listing.files]:
                future.result()
        finally:
            pool.shutdown(wait=True, cancel_futures=True)  # after an error: no further file is started
        manifest = {
            "uri": uri,
            "files": {f.path: f.size for f in listing.files},
            "bytes": listing.bytes,
            "copied_at": time.time(),
            "host": socket.gethostname(),
            "pid": os.getpid(),
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    seconds = time.monotonic() - started
    say(f"data: copied {uri} in {seconds:.1f} s ({listing.bytes / 1e6 / max(seconds, 1e-9):.1f} MB/s)")


def check_reachable(uri: str, cache_dir: Path, local_copy_ok: bool) -> str:
    """Before a sweep starts: one line describing ``uri`` when it can be listed (or, with ``local_copy_ok``,
    when this node has a complete copy of it); RemoteDataError otherwise."""
    try:
        listing = list_remote(uri.rstrip("/"))
    except RemoteDataError as exc:
        if local_copy_ok:
            for folder in copies_of(uri, cache_dir):
                if is_complete(folder):
                    return f"{exc}; using this machine's copy {folder / DATA_DIR}"
        raise
    return f"{uri}: {len(listing.files)} files, {listing.bytes / 1e6:.1f} MB"
