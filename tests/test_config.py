from __future__ import annotations

import pytest

from sepray.config import ConfigError, load_config, preset_names, resolve


def test_presets_load_and_resolve():
    names = preset_names()
    assert {"waveunet-small", "wavenet-small"} <= set(names)
    for name in names:
        cfg = load_config(name)
        assert cfg.model["audio_channels"] == cfg.data.channels
        assert cfg.to_dict()["model"]["name"] == cfg.model_name
        # a resolved config round-trips through its dict form with the same signature
        assert resolve(cfg.to_dict()).signature() == cfg.signature()


def test_overrides_apply_and_change_signature():
    base = load_config("waveunet-small")
    cfg = load_config("waveunet-small", ["train.lr=0.001", "data.augment.gain_min=0.5", "model.levels=3"])
    assert cfg.train.lr == pytest.approx(1e-3)
    assert cfg.data.augment.gain_min == 0.5
    assert cfg.model["levels"] == 3
    assert cfg.signature() != base.signature()
    assert cfg.flat()["data.augment.gain_min"] == 0.5


@pytest.mark.parametrize(
    "override, needle",
    [
        (["train.lrr=1"], "train.lrr: unknown key"),
        (["train.epochs=two"], "train.epochs: expected an integer"),
        (["model.name=nope"], "model.name 'nope' is unknown"),
        (["model.no_such_key=1"], "no_such_key"),
        (["data.augment.gain_min=2.0"], "gain_min"),
        (["train.amp=3"], "train.amp: expected true/false"),
        (["bogus.x=1"], "unknown section 'bogus'"),
        (["model.output=direct", "model.sources=[drums]"], "model.sources"),
    ],
)
def test_bad_values_name_the_key(override, needle):
    with pytest.raises(ConfigError) as err:
        load_config("waveunet-small", override)
    msg = str(err.value)
    assert needle in msg
    assert "\n" not in msg and "preset waveunet-small" in msg


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: line 2, column 1: invalid YAML: expected .,. or .\]."):
        load_config(bad)
    with pytest.raises(ConfigError, match="not a config file or a preset"):
        load_config("no-such-preset")
