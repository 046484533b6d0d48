"""The ensemble package is plain data: config.json + the members' own packages copied inside; it loads back to
the same members and weights with weights_only=True, and every malformed package is a one-line PackageError."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from sepray import SOURCES
from sepray.ensemble.members import Ensemble, member_estimate
from sepray.ensemble.package import (
    FORMAT,
    EnsembleConfig,
    MemberConfig,
    is_ensemble_package,
    load_members,
    read_ensemble_config,
)
from sepray.ensemble.weights import combine
from sepray.package import PackageError, load_package, read_package_info


def test_round_trip_gives_the_same_members_weights_and_output(ensemble_package, member_packages):
    meta = json.loads((ensemble_package / "config.json").read_text())
    assert meta["format"] == FORMAT and meta["kind"] == "ensemble" and meta["format_version"] == 1
    assert meta["sample_rate"] == 16000 and meta["sources"] == list(SOURCES)
    assert [(m["package"], m["weight"], m["model"], m["sample_rate"]) for m in meta["members"]] == [
        ("members/0", 0.3, "waveunet", 8000),
        ("members/1", 0.7, "spec_unet", 16000),
    ]
    assert meta["members"][0]["run_id"] == "a" * 32 and meta["members"][1]["run_id"] is None
    assert sorted(p.relative_to(ensemble_package).as_posix() for p in ensemble_package.rglob("*.*")) == [
        "config.json",
        "members/0/config.json",
        "members/0/state_dict.pt",
        "members/1/config.json",
        "members/1/state_dict.pt",
    ]
    assert is_ensemble_package(ensemble_package) and not is_ensemble_package(member_packages[0])
    config, members = load_members(ensemble_package)
    assert config.weights == (0.3, 0.7) and config == read_ensemble_config(ensemble_package)
    for (model, info), original in zip(members, member_packages, strict=True):
        reference, _ = load_package(original)
        assert info == read_package_info(original)
        for key, value in reference.state_dict().items():
            assert torch.equal(model.state_dict()[key], value), key
    ensemble = Ensemble(config, members)
    mix = torch.randn(1, 16000) * 0.1
    expected = combine([member_estimate(m, mix, 16000, 1.0, "cpu") for m in members], (0.3, 0.7), mix)
    out = ensemble.separate_song(mix, 16000, 1.0)
    for s in SOURCES:
        assert torch.allclose(out[s], expected[s], atol=1e-6)
    assert torch.allclose(out["vocals"] + out["accompaniment"], mix, atol=1e-5)
    assert ensemble.num_parameters == sum(p.numel() for m, _ in members for p in m.parameters())


def _edit(package, **changes):
    path = package / "config.json"
    meta = json.loads(path.read_text())
    for key, value in changes.items():
        if key.startswith("member1_"):
            meta["members"][1][key[len("member1_") :]] = value
        else:
            meta[key] = value
    path.write_text(json.dumps(meta))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"format_version": 2}, "ensemble format version 2 is not supported"),
        ({"format": "sepray-model"}, 'not a sepray ensemble package (expected "format": "sepray-ensemble")'),
        ({"kind": "model"}, 'expected "kind": "ensemble"'),
        ({"member1_weight": 0.9}, "weights must sum to 1"),
        ({"member1_weight": -0.7}, "weights must be finite and >= 0"),
        ({"member1_package": "../../elsewhere"}, "members[1].package: expected members/1"),
        ({"member1_sample_rate": 22050}, "sample_rate: expected the highest member rate"),
        ({"sample_rate": 8000}, "sample_rate: expected the highest member rate"),
        ({"member1_colour": "red"}, "config.json: members[1].colour: unknown key"),
        ({"members": []}, "an ensemble needs at least two"),
    ],
)
def test_a_malformed_config_is_one_line_naming_the_file(ensemble_package, changes, message):
    _edit(ensemble_package, **changes)
    with pytest.raises(PackageError) as info:
        load_members(ensemble_package)
    text = str(info.value)
    assert message in text and str(ensemble_package / "config.json") in text and "\n" not in text


def test_a_member_that_does_not_match_its_entry_or_lost_its_weights(ensemble_package):
    _edit(ensemble_package, member1_model="waveunet")
    with pytest.raises(
        PackageError, match=r"members/1/config.json: holds a spec_unet at 16000 Hz, but .* lists a waveunet"
    ):
        load_members(ensemble_package)
    _edit(ensemble_package, member1_model="spec_unet")
    (ensemble_package / "members" / "1" / "state_dict.pt").unlink()
    with pytest.raises(PackageError, match=r"members/1/state_dict.pt: missing model weights"):
        load_members(ensemble_package)
    shutil.rmtree(ensemble_package / "members")
    with pytest.raises(PackageError, match=r"members/0/config.json: missing"):
        load_members(ensemble_package)


def test_the_single_model_loader_refuses_an_ensemble_and_the_reverse(ensemble_package, member_packages):
    with pytest.raises(PackageError, match="an ensemble of models, not one model: `sepray separate`"):
        read_package_info(ensemble_package)
    with pytest.raises(PackageError, match="not a sepray ensemble package"):
        read_ensemble_config(member_packages[0])
    with pytest.raises(PackageError, match="missing; an ensemble package holds"):
        read_ensemble_config(ensemble_package / "nowhere")


def test_the_config_checks_itself():
    members = (
        MemberConfig("members/0", 0.5, "waveunet", 8000),
        MemberConfig("members/1", 0.5, "spec_unet", 8000),
    )
    assert EnsembleConfig(members, 8000).weights == (0.5, 0.5)
    with pytest.raises(ValueError, match="at least two"):
        EnsembleConfig(members[:1], 8000)
    with pytest.raises(ValueError, match="sources"):
        EnsembleConfig(members, 8000, sources=("vocals",))
