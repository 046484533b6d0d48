"""The tracking store as a file (no mlflow here): which store is in force (:func:`tracking_uri`), a check of a
local sqlite store before mlflow opens it, and one line naming a store that fails (full, read-only, damaged).

mlflow meets a store it cannot use with sqlalchemy tracebacks: a file that is not a database, a read-only
database, a folder it cannot write (where it retries creating its engine for ~100 s first). And opening a
missing or empty database creates the store, even for a read-only query. :func:`check_store` looks at the
file with the standard library first (header, tables, permissions): a command that only reads (``sepray runs``,
``separate``) needs an existing store, one that writes needs it writable, one that may create it
(``sepray train``, a sweep) needs a folder it can create it in. :func:`store_failure` turns the errors of a
store that fails later (full, made read-only) into one line naming it.
"""

from __future__ import annotations

import errno
import os
import sqlite3
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

from sepray.errors import UserError

DEFAULT_DB = "mlflow.db"
SQLITE = "sqlite:///"
HEADER = b"SQLite format 3\x00"
LEVELS = {"read": 0, "write": 1, "create": 2}
_checked: dict[str, int] = {}  # uri -> the highest level already checked in this process


class TrackingError(UserError, RuntimeError):
    """A tracking problem a user must fix (unknown run, no package, unusable store): one line."""


def tracking_uri(uri: str | None = None) -> str:
    """The tracking URI in force: ``uri``, else ``$MLFLOW_TRACKING_URI``, else an absolute local sqlite file."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        return f"sqlite:///{Path.cwd() / DEFAULT_DB}"
    if uri.startswith(SQLITE) and not uri.startswith("sqlite:////"):
        # make relative sqlite paths absolute so Ray workers with another cwd share the same file
        return f"sqlite:///{Path(uri[len(SQLITE) :]).resolve()}"
    return uri


def default_artifact_root(uri: str) -> str | None:
    """Artifacts of a local sqlite store go beside the database file; a server decides for itself."""
    if uri.startswith(SQLITE):
        return (Path(uri[len(SQLITE) :]).parent / "mlartifacts").resolve().as_uri()
    return None


def sqlite_file(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (None for a server or an in-memory database)."""
    if not uri.startswith(SQLITE) or uri in (SQLITE, f"{SQLITE}:memory:"):
        return None
    return Path(uri[len(SQLITE) :].split("?", 1)[0])


def shown(uri: str) -> str:
    """The store as a user knows it: a sqlite file's path, a server's URL without credentials."""
    path = sqlite_file(uri)
    if path is not None:
        return str(path)
    parts = urlsplit(uri)
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2])) if parts.netloc else uri


def check_store(uri: str, need: str = "read") -> None:
    """TrackingError (one line naming the file) unless the sqlite store at ``uri`` can serve ``need``:

    ``read`` -- an MLflow store exists there (never creates one); ``write`` -- and it can be written;
    ``create`` -- it may be missing, and then its folder (or the nearest existing one above) can be written.
    A server URI is not checked here (its calls are retried while it is down, see sepray.tracking).
    """
    path = sqlite_file(uri)
    level = LEVELS[need]
    if path is None or _checked.get(uri, -1) >= level:
        return
    if path.exists() or path.is_symlink():
        has_tables = _check_database(path)
        if not has_tables and level < LEVELS["create"]:
            raise TrackingError(f"{path}: an empty database, no MLflow tracking store; {_WHERE}")
        if level >= LEVELS["write"]:
            _check_writable(path)
    elif level < LEVELS["create"]:
        raise TrackingError(f"{path}: no MLflow tracking store there (nothing was tracked yet); {_WHERE}")
    else:
        _check_creatable(path)
    _checked[uri] = level


_WHERE = "set MLFLOW_TRACKING_URI to the store of your runs (default: ./mlflow.db)"


def _check_database(path: Path) -> bool:
    """TrackingError unless ``path`` is an MLflow sqlite store or an empty database; whether it has tables."""
    if path.is_dir():
        raise TrackingError(f"{path}: is a folder, expected an MLflow sqlite database file")
    try:
        with open(path, "rb") as f:
            head = f.read(len(HEADER))
    except OSError as exc:
        raise TrackingError(f"{path}: cannot read the MLflow tracking store ({exc.strerror})") from None
    if not head:
        return False
    if head != HEADER:
        raise TrackingError(
            f"{path}: not an MLflow tracking store (not an SQLite database); move it aside or {_WHERE}"
        )
    try:
        with sqlite3.connect(f"file:{quote(str(path))}?mode=ro", uri=True, timeout=30) as db:
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    except sqlite3.Error as exc:
        raise TrackingError(f"{path}: a damaged or unreadable SQLite database ({exc})") from None
    if tables and "experiments" not in tables:
        raise TrackingError(
            f"{path}: an SQLite database, but not an MLflow tracking store (no experiments table)"
        )
    return bool(tables)


def _why_not_writable(path: Path) -> str:
    try:
        if os.statvfs(path).f_flag & os.ST_RDONLY:
            return "read-only file system"
    except OSError:
        pass
    return "no write permission"


def _check_writable(path: Path) -> None:
    """sqlite writes the database file and a journal beside it."""
    for target in (path, path.parent):
        if not os.access(target, os.W_OK):
            what = (
                "the MLflow tracking store" if target == path else "the folder of the MLflow tracking store"
            )
            raise TrackingError(f"{target}: {what} cannot be written ({_why_not_writable(target)})")


def _check_creatable(path: Path) -> None:
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise TrackingError(f"{folder}: is not a folder; cannot create the MLflow tracking store {path}")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise TrackingError(
            f"{folder}: cannot be written ({_why_not_writable(folder)}); cannot create the MLflow tracking "
            f"store {path} there"
        )


# what sqlite (through sqlalchemy and mlflow, or a server's error text) says about a store that cannot go on
FAILURES = {
    "database or disk is full": "is full",
    "attempt to write a readonly database": "is read-only",
    "file is not a database": "is not an SQLite database",
    "database disk image is malformed": "is damaged",
    "unable to open database file": "cannot be opened",
    "disk i/o error": "had a disk I/O error",
}
FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


def store_failure(exc: BaseException, uri: str) -> str | None:
    """One line naming the store and what is wrong with it, when ``exc`` says it cannot go on; else None."""
    if isinstance(exc, OSError) and exc.errno in (*FULL_ERRNOS, errno.EROFS):
        what = "is full" if exc.errno in FULL_ERRNOS else "is read-only"
        where = f" ({exc.filename})" if exc.filename else ""
        return f"the MLflow artifact store of {shown(uri)}{where} {what} ({exc.strerror})"
    text = str(exc).lower()
    for needle, what in FAILURES.items():
        if needle in text:
            return f"the MLflow tracking store {shown(uri)} {what} ({needle})"
    return None
