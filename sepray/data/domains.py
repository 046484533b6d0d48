"""Domain labels for the domain confusion loss (UMT): one style label per song.

A song's domain, first match wins:

* ``domains.json`` in the dataset root (the folder holding the song folders; for MUSDB18-HQ the one holding
  ``train/`` and ``test/``), when the user supplies one: ``{"<song folder name>": "<label>", ...}`` covering
  every song;
* the ``style`` the synthetic generator drew for the song (its ``meta.json``: rock, ballad, electronic, funk,
  folk);
* else the song folder itself: one domain per song.

:func:`domain_index` numbers the labels of a list of songs (sorted label order) for the crop sampler.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from sepray.data.layouts import DatasetError

DOMAINS_FILE = "domains.json"
DOMAIN = "domain"  # the key of Song.meta holding the label


def read_domains_file(root: Path) -> dict[str, str] | None:
    """``root/domains.json`` as {song name: label}, or None when there is none."""
    path = root / DOMAINS_FILE
    if not path.is_file():
        return None
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DatasetError(f"{path}: cannot read the domain labels ({exc})") from None
    if not isinstance(raw, dict) or not all(isinstance(v, str | int) for v in raw.values()):
        raise DatasetError(f"{path}: expected a JSON object mapping song folder names to labels")
    return {str(k): str(v) for k, v in raw.items()}


def label_songs(songs, root: Path, names: Sequence[str] | None = None) -> None:
    """Set ``song.meta["domain"]`` on every song (see the module docstring for where the label comes from).

    ``names``: each song's name inside ``root`` (``domains.json``'s keys) when it differs from ``song.name``
    (with several corpora, songs are named ``<corpus>/<song>``).
    """
    given = read_domains_file(root)
    for song, name in zip(songs, names if names is not None else [s.name for s in songs], strict=True):
        if given is not None:
            if name not in given:
                raise DatasetError(f"{root / DOMAINS_FILE}: no label for song {name!r}")
            song.meta[DOMAIN] = given[name]
        else:
            song.meta[DOMAIN] = str(song.meta.get("style") or song.name)


def domain_index(songs: Sequence) -> tuple[list[int], tuple[str, ...]]:
    """(index of each song's domain, the domain labels in index order); unlabelled songs use their name."""
    labels = [str(song.meta.get(DOMAIN, song.name)) for song in songs]
    classes = tuple(sorted(set(labels)))
    return [classes.index(label) for label in labels], classes


def check_domains(classes: Sequence[str], num_domains: int) -> None:
    """A confusion loss needs at least two domains in the training songs, and no more than the classifier has."""
    from sepray.errors import UsageError

    if len(classes) < 2:
        raise UsageError(
            f"model.confusion_weight > 0 needs training songs of at least two domains, but all are {classes[0]!r}; "
            f"add a {DOMAINS_FILE} to the dataset root or set model.confusion_weight=0"
        )
    if len(classes) > num_domains:
        raise UsageError(
            f"the training songs have {len(classes)} domains ({', '.join(classes[:8])}"
            f"{', ...' if len(classes) > 8 else ''}) but model.num_domains is {num_domains}; "
            f"set model.num_domains={len(classes)}"
        )
