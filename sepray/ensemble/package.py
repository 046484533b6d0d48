"""A saved ensemble is plain data: ``config.json`` (kind "ensemble", its members and weights) + the members' own
model packages copied inside it (``members/<i>/config.json`` + ``state_dict.pt``, loaded with
``weights_only=True`` by :func:`sepray.package.load_package`).

Members are copied rather than referenced by run id: an ensemble is a model of its own (registered in the MLflow
model registry, moved to another tracking server, kept after its sweep's trials are deleted), and a reference
would break when the member runs go; the copy costs the members' weights again (2.4 MB for the quickstart's two
spectrogram U-Nets). Each member keeps its run id in ``config.json`` as provenance only.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

import sepray
from sepray import SOURCES
from sepray.atomic import folder_written_atomically
from sepray.models import Separator
from sepray.package import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    PackageError,
    PackageInfo,
    load_package,
    read_package_info,
)
from sepray.schema import ConfigError, build_dataclass

FORMAT = "sepray-ensemble"
FORMAT_VERSION = 1
KIND = "ensemble"
MEMBERS_DIR = "members"
WEIGHT_SUM_TOLERANCE = 1e-4


@dataclass(frozen=True)
class MemberConfig:
    """One member: its package folder inside the ensemble's (``members/<i>``), its weight, family, rate, and the
    MLflow run it was copied from (provenance; loading does not need that run)."""

    package: str
    weight: float
    model: str
    sample_rate: int
    run_id: str | None = None


@dataclass(frozen=True)
class EnsembleConfig:
    """The ensemble's ``config.json``: members (at least two; weights >= 0 summing to one), the sources it
    predicts, the rate it is evaluated at (its highest member rate; each member separates at its own rate), and
    how the weights were chosen (``fit``, plain JSON)."""

    members: tuple[MemberConfig, ...]
    sample_rate: int
    sources: tuple[str, ...] = SOURCES
    fit: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION
    sepray_version: str = sepray.__version__

    def __post_init__(self) -> None:
        if len(self.members) < 2:
            raise ValueError(f"members: an ensemble needs at least two, got {len(self.members)}")
        weights = [m.weight for m in self.members]
        if not all(math.isfinite(w) and w >= 0 for w in weights):
            raise ValueError(f"members: weights must be finite and >= 0, got {weights}")
        if abs(sum(weights) - 1.0) > WEIGHT_SUM_TOLERANCE:
            raise ValueError(f"members: weights must sum to 1, got {weights} (sum {sum(weights):.6g})")
        for i, member in enumerate(self.members):
            if member.package != f"{MEMBERS_DIR}/{i}":
                raise ValueError(f"members[{i}].package: expected {MEMBERS_DIR}/{i}, got {member.package!r}")
        if tuple(self.sources) != SOURCES:
            raise ValueError(f"sources: expected {list(SOURCES)}, got {list(self.sources)}")
        if self.sample_rate != max(m.sample_rate for m in self.members):
            raise ValueError(f"sample_rate: expected the highest member rate, got {self.sample_rate}")

    @property
    def weights(self) -> tuple[float, ...]:
        return tuple(m.weight for m in self.members)


def member_configs(infos: list[PackageInfo], weights, run_ids: list[str | None]) -> tuple[MemberConfig, ...]:
    """The members' entries of ``config.json``, in order, from their packages' infos."""
    return tuple(
        MemberConfig(f"{MEMBERS_DIR}/{i}", float(w), info.model, info.sample_rate, run_id)
        for i, (info, w, run_id) in enumerate(zip(infos, weights, run_ids, strict=True))
    )


def save_ensemble(directory: str | os.PathLike, config: EnsembleConfig, packages: list[Path]) -> Path:
    """Write ``directory/config.json`` and copy each member package (``packages[i]``, a model package folder) to
    ``directory/members/<i>/``, atomically (the folder appears whole or not at all)."""
    directory = Path(directory)
    if len(packages) != len(config.members):
        raise ValueError(f"{len(packages)} member packages for {len(config.members)} members")
    with folder_written_atomically(directory) as tmp:
        for member, source in zip(config.members, packages, strict=True):
            read_package_info(source)  # a model package, not anything else (nor another ensemble)
            (tmp / member.package).mkdir(parents=True)
            for name in (CONFIG_FILE, WEIGHTS_FILE):
                shutil.copyfile(Path(source) / name, tmp / member.package / name)
        meta = {"format": FORMAT, "kind": KIND, **asdict(config)}
        (tmp / CONFIG_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return directory


def is_ensemble_package(directory: str | os.PathLike) -> bool:
    """Whether ``directory`` holds an ensemble's ``config.json`` (not a single model's)."""
    try:
        return json.loads((Path(directory) / CONFIG_FILE).read_text()).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def read_ensemble_config(directory: str | os.PathLike) -> EnsembleConfig:
    """Parse and check an ensemble's ``config.json``; PackageError (one line naming the file) otherwise."""
    path = Path(directory) / CONFIG_FILE
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        raise PackageError(
            f"{path}: missing; an ensemble package holds {CONFIG_FILE} and {MEMBERS_DIR}/"
        ) from None
    except (OSError, json.JSONDecodeError) as exc:
        raise PackageError(f"{path}: not readable JSON ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise PackageError(f'{path}: not a sepray ensemble package (expected "format": "{FORMAT}")')
    if meta.get("format_version") != FORMAT_VERSION:
        raise PackageError(
            f"{path}: ensemble format version {meta.get('format_version')!r} is not supported "
            f"(this sepray {sepray.__version__} reads version {FORMAT_VERSION})"
        )
    if meta.get("kind") != KIND:
        raise PackageError(f'{path}: expected "kind": "{KIND}", got {meta.get("kind")!r}')
    fields = {k: v for k, v in meta.items() if k not in ("format", "kind")}
    try:
        return build_dataclass(EnsembleConfig, fields, str(path))
    except ConfigError as exc:  # "FILE.members[1].weight: ..." -> "FILE: members[1].weight: ..."
        raise PackageError(str(exc).replace(f"{path}.", f"{path}: ", 1)) from None


def load_members(
    directory: str | os.PathLike, device: str | torch.device = "cpu"
) -> tuple[EnsembleConfig, list[tuple[Separator, PackageInfo]]]:
    """The ensemble's config and its members as (model, PackageInfo), each loaded from its copied package."""
    directory = Path(directory)
    config = read_ensemble_config(directory)
    members = []
    for member in config.members:
        model, info = load_package(directory / member.package, device)
        if (info.model, info.sample_rate) != (member.model, member.sample_rate):
            raise PackageError(
                f"{directory / member.package / CONFIG_FILE}: holds a {info.model} at {info.sample_rate} Hz, "
                f"but {directory / CONFIG_FILE} lists a {member.model} at {member.sample_rate} Hz"
            )
        members.append((model, info))
    return config, members
