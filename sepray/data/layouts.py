"""Dataset layouts on disk: which files are songs and which files (streams, channels) hold which source.

* CCMixter: one folder per song with ``mix.wav``, ``source-01.wav`` (accompaniment), ``source-02.wav``
  (vocals) and an optional ``meta.json``.
* MUSDB18-HQ (``musdb``): a root with ``train/`` and ``test/``; one folder per track with ``mixture.wav``,
  ``vocals.wav``, ``drums.wav``, ``bass.wav``, ``other.wav`` (accompaniment = drums + bass + other).
* MUSDB18 as distributed (``musdb-stems``): ``train/`` and ``test/`` of ``<track>.stem.mp4`` files, each with 5
  audio streams: mixture, drums, bass, other, vocals (accompaniment = drums + bass + other); read with ffmpeg.
* MIR-1K / iKala (``mir1k``, alias ``ikala``): a folder of stereo WAVs, one clip each, left channel =
  accompaniment, right channel = vocals, mixture = left + right (the sources as recorded, so the mixture is their
  exact sum; MIR-1K's L + R peaks at full scale, never above). Song = clip (the file name without ``.wav``);
  singer = the file name's prefix before the first ``_`` (``abjones_1_01.wav`` -> ``abjones``; iKala's
  ``10161_chorus.wav`` -> ``10161``). A root without WAVs whose ``Wavfile/`` folder has them (both data sets are
  distributed that way) is read from ``Wavfile/``.

:func:`find_corpus` is the one place that turns a dataset root into its layout and local song files;
:func:`list_songs` lists them. Nothing here decodes audio; :mod:`sepray.data.corpus` turns a :class:`SongFiles`
into a ``Song`` through :mod:`sepray.data.cache`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from sepray.config import LAYOUT_ALIASES, LAYOUTS
from sepray.errors import UserError

# source name -> files summed to make it, per folder layout; the mixture file separately
MIX_FILE = {"ccmixter": "mix.wav", "musdb": "mixture.wav"}
SOURCE_FILES = {
    "ccmixter": {"vocals": ("source-02.wav",), "accompaniment": ("source-01.wav",)},
    "musdb": {"vocals": ("vocals.wav",), "accompaniment": ("drums.wav", "bass.wav", "other.wav")},
}
META_FILE = "meta.json"  # CCMixter only (the synthetic corpus writes one per song)
MUSDB_SUBSETS = ("train", "test")
STEM_SUFFIX = ".stem.mp4"
STEM_STREAMS = ("mixture", "drums", "bass", "other", "vocals")  # the stream order of MUSDB18's .stem.mp4
MIR1K_CHANNELS = {"accompaniment": 0, "vocals": 1}  # left, right
MIR1K_FOLDER = "Wavfile"  # where MIR-1K and iKala keep their clips
PRETTY = {
    "ccmixter": "CCMixter",
    "musdb": "MUSDB18-HQ",
    "musdb-stems": "MUSDB18 (.stem.mp4)",
    "mir1k": "MIR-1K",
}

_EXPECTED = (
    "expected a MUSDB18-HQ root (train/ and test/ folders of track folders with mixture.wav), a MUSDB18 root "
    "(train/ and test/ of .stem.mp4 files), a CCMixter root (song folders with mix.wav, source-01.wav, "
    "source-02.wav) or a MIR-1K / iKala folder of stereo WAVs"
)


class DatasetError(UserError, ValueError):
    """A dataset folder that cannot be used; the one-line message names the path and what was expected."""


@dataclass(frozen=True)
class Part:
    """What one source (or the mixture) takes from one file: an audio stream, and one channel or all."""

    path: Path
    stream: int = 0  # audio stream index in the file (WAV: 0)
    channel: int | None = None  # None: every channel of the stream

    @property
    def selector(self) -> str | None:
        """Cache-key suffix; None for a whole WAV file (the key of before parts existed)."""
        if self.stream == 0 and self.channel is None:
            return None
        return f"stream{self.stream}" + ("" if self.channel is None else f"-channel{self.channel}")


@dataclass(frozen=True)
class SongFiles:
    """The files of one song, checked to exist: the mixture and each source as sums of parts."""

    name: str
    folder: Path  # the song folder, or the song's file for one-file layouts (mir1k, musdb-stems)
    layout: str  # one of LAYOUTS
    mix: tuple[Part, ...]  # summed to make the mixture
    sources: dict[str, tuple[Part, ...]]  # source name -> parts summed to make it
    meta: Path | None = None  # meta.json when present (CCMixter)
    subset: str | None = None  # "train" / "test" for the MUSDB layouts
    info: dict = field(default_factory=dict)  # meta the layout knows: {"singer": ...} for mir1k

    @property
    def parts(self) -> tuple[Part, ...]:
        return (*self.mix, *(p for parts in self.sources.values() for p in parts))

    @property
    def audio_files(self) -> tuple[Path, ...]:
        """The distinct files, in order of first use."""
        return tuple(dict.fromkeys(p.path for p in self.parts))


def canonical_layout(layout: str) -> str:
    return LAYOUT_ALIASES.get(layout, layout)


def required_files(layout: str) -> tuple[str, ...]:
    """File names every song folder of a folder layout must contain, mixture first."""
    return (MIX_FILE[layout], *(f for files in SOURCE_FILES[layout].values() for f in files))


def song_folders(root: Path) -> list[Path]:
    """Sub-folders of ``root`` (not hidden) that contain at least one .wav file, sorted by name."""
    if not root.is_dir():
        return []
    return sorted(
        (p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".") and any(p.glob("*.wav"))),
        key=lambda p: p.name,
    )


def stem_files(folder: Path) -> list[Path]:
    """``*.stem.mp4`` files of ``folder`` (not hidden), sorted by name."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.name.endswith(STEM_SUFFIX) and not p.name.startswith("."))


def wav_files(folder: Path) -> list[Path]:
    """``*.wav`` files directly in ``folder`` (not hidden, any case of the suffix), sorted by name."""
    if not folder.is_dir():
        return []
    return sorted(
        p
        for p in folder.iterdir()
        if p.suffix.lower() == ".wav" and not p.name.startswith(".") and p.is_file()
    )


def is_musdb_root(root: Path) -> bool:
    return any(
        (folder / MIX_FILE["musdb"]).is_file() for sub in MUSDB_SUBSETS for folder in song_folders(root / sub)
    )


def is_musdb_stems_root(root: Path) -> bool:
    return any(stem_files(root / sub) for sub in MUSDB_SUBSETS)


def is_ccmixter_root(root: Path) -> bool:
    return any((folder / MIX_FILE["ccmixter"]).is_file() for folder in song_folders(root))


def is_mir1k_root(root: Path) -> bool:
    return bool(wav_files(root))


DETECT = {
    "musdb": is_musdb_root,
    "musdb-stems": is_musdb_stems_root,
    "ccmixter": is_ccmixter_root,
    "mir1k": is_mir1k_root,
}
NOT_A_ROOT = {
    "musdb": "not a MUSDB18-HQ root; expected train/ and test/ folders of track folders with mixture.wav",
    "musdb-stems": "not a MUSDB18 root; expected train/ and test/ folders of <track>.stem.mp4 files",
    "ccmixter": "not a CCMixter root; expected song folders with mix.wav",
    "mir1k": "not a MIR-1K / iKala folder; expected stereo .wav clips (left = accompaniment, right = vocals)",
}


def find_corpus(root: str | Path, layout: str = "auto") -> tuple[Path, str]:
    """(local folder holding the songs, layout) of a dataset root: ``layout`` checked, or detected.

    The one place a dataset root becomes local song files. DatasetError (naming the path) when the root is
    missing, matches no layout, or matches several and ``layout`` is "auto".
    """
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise DatasetError(f"{root}: no such dataset folder; {_EXPECTED}")
    if layout != "auto" and canonical_layout(layout) not in LAYOUTS:
        choices = ", ".join(("auto", *LAYOUTS, *LAYOUT_ALIASES))
        raise DatasetError(f"{root}: unknown layout {layout!r}; expected one of {choices}")
    layout = canonical_layout(layout)
    if layout in ("auto", "mir1k") and not is_mir1k_root(root) and is_mir1k_root(root / MIR1K_FOLDER):
        if layout == "mir1k" or not any(DETECT[name](root) for name in LAYOUTS):
            return root / MIR1K_FOLDER, "mir1k"
    if layout != "auto":
        if not DETECT[layout](root):
            raise DatasetError(f"{root}: {NOT_A_ROOT[layout]}")
        return root, layout
    found = [name for name in LAYOUTS if DETECT[name](root)]
    if not found:
        raise DatasetError(f"{root}: not a dataset root; {_EXPECTED}")
    if len(found) > 1:
        raise DatasetError(
            f"{root}: matches several layouts ({', '.join(found)}); set data.layout to the one you mean"
        )
    return root, found[0]


def list_songs(root: Path, layout: str) -> list[SongFiles]:
    """Every song of a corpus folder returned by :func:`find_corpus`, sorted by (subset, name)."""
    if layout == "musdb":
        return [song_files(f, "musdb", subset=sub) for sub in MUSDB_SUBSETS for f in song_folders(root / sub)]
    if layout == "musdb-stems":
        return [stem_song(f, sub) for sub in MUSDB_SUBSETS for f in stem_files(root / sub)]
    if layout == "mir1k":
        return [mir1k_song(f) for f in wav_files(root)]
    return [song_files(f, "ccmixter") for f in song_folders(root)]


def folder_layout(folder: Path, layout: str = "auto") -> str:
    """Layout of one song folder or file: ``layout`` when given, else from its files' names."""
    layout = canonical_layout(layout)
    if layout != "auto":
        if layout not in LAYOUTS:
            raise DatasetError(f"{folder}: unknown layout {layout!r}; expected auto, {', '.join(LAYOUTS)}")
        return layout
    if folder.is_file():
        if folder.name.endswith(STEM_SUFFIX):
            return "musdb-stems"
        if folder.suffix.lower() == ".wav":
            return "mir1k"
    if not folder.is_dir():
        raise DatasetError(f"{folder}: no such song folder")
    for name in MIX_FILE:
        if (folder / MIX_FILE[name]).is_file():
            return name
    raise DatasetError(
        f"{folder}: not a song folder; expected mix.wav, source-01.wav, source-02.wav (CCMixter) "
        "or mixture.wav, vocals.wav, drums.wav, bass.wav, other.wav (MUSDB18-HQ), a .stem.mp4 file (MUSDB18) "
        "or a stereo .wav clip (MIR-1K / iKala)"
    )


def song_files(folder: Path, layout: str = "auto", subset: str | None = None) -> SongFiles:
    """The files of one song folder or file; DatasetError naming the first missing file."""
    folder = Path(folder)
    layout = folder_layout(folder, layout)
    if layout == "musdb-stems":
        return stem_song(folder, subset)
    if layout == "mir1k":
        return mir1k_song(folder)
    for name in required_files(layout):
        if not (folder / name).is_file():
            raise DatasetError(
                f"{folder / name}: missing file; a {PRETTY[layout]} song folder needs {', '.join(required_files(layout))}"
            )
    meta = folder / META_FILE
    return SongFiles(
        name=folder.name,
        folder=folder,
        layout=layout,
        mix=(Part(folder / MIX_FILE[layout]),),
        sources={src: tuple(Part(folder / f) for f in files) for src, files in SOURCE_FILES[layout].items()},
        meta=meta if layout == "ccmixter" and meta.is_file() else None,
        subset=subset,
    )


def stem_song(path: Path, subset: str | None = None) -> SongFiles:
    """One MUSDB18 track: ``<name>.stem.mp4`` with the streams of :data:`STEM_STREAMS`."""
    if not path.is_file():
        raise DatasetError(f"{path}: no such file; expected a MUSDB18 <track>.stem.mp4")
    stream = {name: i for i, name in enumerate(STEM_STREAMS)}
    return SongFiles(
        name=path.name[: -len(STEM_SUFFIX)] if path.name.endswith(STEM_SUFFIX) else path.stem,
        folder=path,
        layout="musdb-stems",
        mix=(Part(path, stream["mixture"]),),
        sources={
            "vocals": (Part(path, stream["vocals"]),),
            "accompaniment": tuple(Part(path, stream[s]) for s in ("drums", "bass", "other")),
        },
        subset=subset,
    )


def mir1k_song(path: Path) -> SongFiles:
    """One MIR-1K / iKala clip: a stereo WAV, left = accompaniment, right = vocals, mixture = left + right."""
    if not path.is_file():
        raise DatasetError(
            f"{path}: no such file; expected a stereo .wav clip (left = accompaniment, right = vocals)"
        )
    channel = {src: Part(path, 0, ch) for src, ch in MIR1K_CHANNELS.items()}
    name = path.stem
    return SongFiles(
        name=name,
        folder=path,
        layout="mir1k",
        mix=(channel["accompaniment"], channel["vocals"]),
        sources={"vocals": (channel["vocals"],), "accompaniment": (channel["accompaniment"],)},
        info={"singer": singer_of(name)},
    )


def singer_of(clip_name: str) -> str:
    """MIR-1K / iKala singer: the clip name's prefix before the first ``_`` (the whole name without one)."""
    return clip_name.split("_", 1)[0]
