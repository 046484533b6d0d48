"""Dataset layouts on disk: which folders are songs and which files hold which source.

* CCMixter: one folder per song with ``mix.wav``, ``source-01.wav`` (accompaniment), ``source-02.wav``
  (vocals) and an optional ``meta.json``.
* MUSDB18-HQ: a root with ``train/`` and ``test/``; one folder per track with ``mixture.wav``, ``vocals.wav``,
  ``drums.wav``, ``bass.wav``, ``other.wav`` (accompaniment = drums + bass + other).

Nothing here decodes audio; :mod:`sepray.data.corpus` turns a :class:`SongFiles` into a ``Song``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sepray.errors import UserError

LAYOUTS = ("ccmixter", "musdb")

# source name -> files summed to make it, per layout; the mixture file separately
MIX_FILE = {"ccmixter": "mix.wav", "musdb": "mixture.wav"}
SOURCE_FILES = {
    "ccmixter": {"vocals": ("source-02.wav",), "accompaniment": ("source-01.wav",)},
    "musdb": {"vocals": ("vocals.wav",), "accompaniment": ("drums.wav", "bass.wav", "other.wav")},
}
META_FILE = "meta.json"  # CCMixter only (the synthetic corpus writes one per song)
MUSDB_SUBSETS = ("train", "test")

_EXPECTED = (
    "expected a MUSDB18-HQ root (train/ and test/ folders of track folders with mixture.wav) "
    "or a CCMixter root (song folders with mix.wav, source-01.wav, source-02.wav)"
)


class DatasetError(UserError, ValueError):
    """A dataset folder that cannot be used; the one-line message names the path and what was expected."""


@dataclass(frozen=True)
class SongFiles:
    """The files of one song folder, checked to exist."""

    name: str
    folder: Path
    layout: str  # "ccmixter" | "musdb"
    mix: Path
    sources: dict[str, tuple[Path, ...]]  # source name -> files summed to make it
    meta: Path | None  # meta.json when present

    @property
    def audio_files(self) -> tuple[Path, ...]:
        return (self.mix, *(p for paths in self.sources.values() for p in paths))


def required_files(layout: str) -> tuple[str, ...]:
    """File names every song folder of ``layout`` must contain, mixture first."""
    return (MIX_FILE[layout], *(f for files in SOURCE_FILES[layout].values() for f in files))


def song_folders(root: Path) -> list[Path]:
    """Sub-folders of ``root`` (not hidden) that contain at least one .wav file, sorted by name."""
    if not root.is_dir():
        return []
    return sorted(
        (p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".") and any(p.glob("*.wav"))),
        key=lambda p: p.name,
    )


def is_musdb_root(root: Path) -> bool:
    return any(
        (folder / MIX_FILE["musdb"]).is_file() for sub in MUSDB_SUBSETS for folder in song_folders(root / sub)
    )


def is_ccmixter_root(root: Path) -> bool:
    return any((folder / MIX_FILE["ccmixter"]).is_file() for folder in song_folders(root))


def detect_layout(root: Path, layout: str = "auto") -> str:
    """Layout of a dataset root: ``layout`` checked, or detected when "auto". DatasetError if it is neither."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: no such dataset folder; {_EXPECTED}")
    if layout == "auto":
        if is_musdb_root(root):
            return "musdb"
        if is_ccmixter_root(root):
            return "ccmixter"
        raise DatasetError(f"{root}: not a dataset root; {_EXPECTED}")
    if layout not in LAYOUTS:
        raise DatasetError(f"{root}: unknown layout {layout!r}; expected auto, ccmixter or musdb")
    if layout == "musdb" and not is_musdb_root(root):
        raise DatasetError(
            f"{root}: not a MUSDB18-HQ root; expected train/ and test/ folders of track folders with mixture.wav"
        )
    if layout == "ccmixter" and not is_ccmixter_root(root):
        raise DatasetError(f"{root}: not a CCMixter root; expected song folders with mix.wav")
    return layout


def folder_layout(folder: Path, layout: str = "auto") -> str:
    """Layout of one song folder: ``layout`` when given, else from its mixture file's name."""
    if layout != "auto":
        if layout not in LAYOUTS:
            raise DatasetError(f"{folder}: unknown layout {layout!r}; expected auto, ccmixter or musdb")
        return layout
    if not folder.is_dir():
        raise DatasetError(f"{folder}: no such song folder")
    for name in LAYOUTS:
        if (folder / MIX_FILE[name]).is_file():
            return name
    raise DatasetError(
        f"{folder}: not a song folder; expected mix.wav, source-01.wav, source-02.wav (CCMixter) "
        "or mixture.wav, vocals.wav, drums.wav, bass.wav, other.wav (MUSDB18-HQ)"
    )


def song_files(folder: Path, layout: str = "auto") -> SongFiles:
    """Check that ``folder`` holds every file of its layout; DatasetError naming the first missing file."""
    folder = Path(folder)
    layout = folder_layout(folder, layout)
    for name in required_files(layout):
        if not (folder / name).is_file():
            raise DatasetError(
                f"{folder / name}: missing file; a {_pretty(layout)} song folder needs {', '.join(required_files(layout))}"
            )
    meta = folder / META_FILE
    return SongFiles(
        name=folder.name,
        folder=folder,
        layout=layout,
        mix=folder / MIX_FILE[layout],
        sources={src: tuple(folder / f for f in files) for src, files in SOURCE_FILES[layout].items()},
        meta=meta if layout == "ccmixter" and meta.is_file() else None,
    )


def _pretty(layout: str) -> str:
    return {"ccmixter": "CCMixter", "musdb": "MUSDB18-HQ"}[layout]
