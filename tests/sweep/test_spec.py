"""Sweep specs: validation errors name the YAML path, conditional parameters, grid / random / optuna setup."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml

from sepray.sweep.space import GRID_KEY, grid_points, random_samples, trial_raw_config
from sepray.sweep.spec import SpecError, load_spec, parse_spec

REPO = Path(__file__).resolve().parents[2]
LABEL = "sweeps/x.yaml"

BASE = {
    "name": "unit",
    "data": {"sample_rate": 8000, "synth_songs": 4, "synth_seconds": 4.0},
    "model": {"name": "waveunet", "levels": 3, "channels": 4},
    "train": {"batch_size": 2},
    "search": {
        "num_samples": 4,
        "params": {
            "model.levels": {"int": [2, 4]},
            "model.upsampling": {"choice": ["linear", "learned"]},
            "train.lr": {"loguniform": [1.0e-4, 1.0e-3]},
        },
    },
    "budget": {"epochs": 3, "steps_per_epoch": 2},
}

FAMILIES = {
    "name": "families",
    "data": {"sample_rate": 8000},
    "model": {"sources": ["vocals", "accompaniment"]},
    "families": {
        "waveunet": {"levels": 3, "channels": 4, "down_kernel": 5, "up_kernel": 3},
        "wavenet": {
            "blocks": 1,
            "layers_per_block": 3,
            "residual_channels": 8,
            "skip_channels": 8,
            "end_channels": 8,
        },
    },
    "search": {
        "num_samples": 4,
        "params": {
            "model.name": {"choice": ["waveunet", "wavenet"]},
            "model.levels": {"int": [2, 4], "when": {"model.name": "waveunet"}},
            "model.input": {"choice": ["mulaw", "raw", "stft"], "when": {"model.name": "wavenet"}},
            "model.head": {"choice": ["mulaw", "regression"], "when": {"model.name": "wavenet"}},
            "model.stft_n_fft": {"choice": [32, 64], "when": {"model.input": "stft"}},
        },
    },
}


def spec_with(base: dict, path: str, value) -> dict:
    """A copy of ``base`` with the dotted path (search.params keys taken whole) set; value None deletes."""
    raw = copy.deepcopy(base)
    node = raw
    parts = path.split(".")
    if path.startswith("search.params."):
        node = raw["search"]["params"]
        rest = path[len("search.params.") :]
        key = next((k for k in node if rest.startswith(k + ".")), None)
        if key is None:
            node[rest] = value
            return raw
        node, parts = node[key], rest[len(key) + 1 :].split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    if value is None:
        node.pop(parts[-1], None)
    else:
        node[parts[-1]] = value
    return raw


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        ("colour", "red", "sweeps/x.yaml: colour: unknown key"),
        ("search.algorithm", "hyperopt", "sweeps/x.yaml: search.algorithm: must be one of"),
        ("search.num_samples", "many", "sweeps/x.yaml: search.num_samples: expected an integer"),
        ("search.sampler", "tpe", "sweeps/x.yaml: search.sampler: unknown key"),
        (
            "search.params.model.levelz",
            {"int": [2, 4]},
            "sweeps/x.yaml: search.params.model.levelz: waveunet has no config key 'levelz'",
        ),
        (
            "search.params.model.levels",
            {"int": ["two", 4]},
            "sweeps/x.yaml: search.params.model.levels.int: expected an integer",
        ),
        (
            "search.params.model.levels",
            {"uniform": [2, 4]},
            "sweeps/x.yaml: search.params.model.levels: the key holds integers",
        ),
        (
            "search.params.model.upsampling",
            {"choice": []},
            "sweeps/x.yaml: search.params.model.upsampling.choice: empty choice list",
        ),
        (
            "search.params.model.upsampling",
            {"choice": ["linear", 3]},
            "sweeps/x.yaml: search.params.model.upsampling.choice: expected a string",
        ),
        (
            "search.params.model.upsampling",
            {"choose": ["linear"]},
            "sweeps/x.yaml: search.params.model.upsampling.choose: unknown key",
        ),
        (
            "search.params.train.lr",
            {"loguniform": [0, 1]},
            "sweeps/x.yaml: search.params.train.lr.loguniform: low must be > 0",
        ),
        (
            "search.params.train.lr",
            {"uniform": [0.1, 0.01]},
            "sweeps/x.yaml: search.params.train.lr.uniform: need low < high",
        ),
        (
            "search.params.train.epochs",
            {"int": [1, 3]},
            "sweeps/x.yaml: search.params.train.epochs: the per-trial budget",
        ),
        (
            "search.params.data.synth_sungs",
            {"int": [4, 6]},
            "sweeps/x.yaml: search.params.data.synth_sungs: data has no key",
        ),
        ("search.params.data.augment.gain_min", {"uniform": [0.5, 0.8]}, None),
        (
            "search.params.data.augment.gain_mid",
            {"uniform": [0.5, 0.8]},
            "search.params.data.augment.gain_mid: data has no key",
        ),
        (
            "search.params.model.levels",
            {"int": [2, 4], "when": {"model.nope": 1}},
            "search.params.model.levels.when.model.nope",
        ),
        (
            "search.params.model.levels",
            [2, 3],
            "sweeps/x.yaml: search.params.model.levels: expected a mapping",
        ),
        ("scheduler.grace", 1, "sweeps/x.yaml: scheduler.grace: unknown key"),
        ("scheduler.type", "hyperband", "sweeps/x.yaml: scheduler.type: must be asha or none"),
        ("resources.cpu", "two", "sweeps/x.yaml: resources.cpu: expected a number"),
        ("resources.per_family.wavenet", {"gpu": 1}, None),
        (
            "resources.per_family.wavnet",
            {"gpu": 1},
            "sweeps/x.yaml: resources.per_family.wavnet: unknown model",
        ),
        (
            "resources.per_family.wavenet",
            {"gpus": 1},
            "sweeps/x.yaml: resources.per_family.wavenet.gpus: unknown key; expected one of ['cpu', 'gpu', 'memory_gb']",
        ),
        (
            "resources.per_family.wavenet",
            {"per_family": {}},
            "sweeps/x.yaml: resources.per_family.wavenet.per_family: unknown key",
        ),
        (
            "resources.per_family.wavenet",
            {"gpu": "one"},
            "resources.per_family.wavenet.gpu: expected a number",
        ),
        (
            "resources.per_family.wavenet",
            {"gpu": -1},
            "resources.per_family.wavenet.cpu: cpu and gpu must be >= 0",
        ),
        (
            "resources.per_family.wavenet",
            1,
            "sweeps/x.yaml: resources.per_family.wavenet: expected a mapping",
        ),
        ("resources.per_family", [1], "sweeps/x.yaml: resources.per_family: expected a mapping"),
        ("budget.epochs", 0, "sweeps/x.yaml: budget.epochs: must be >= 1"),
        ("budget.epoch", 3, "sweeps/x.yaml: budget.epoch: unknown key"),
        ("metric", "valid_sdr_drums", "sweeps/x.yaml: metric: 'valid_sdr_drums' is not reported"),
        ("top_k", "three", "sweeps/x.yaml: top_k: expected an integer"),
        ("model.levelz", 3, "sweeps/x.yaml: model: model waveunet.levelz: unknown key"),
        ("data.rate", 8000, "sweeps/x.yaml: data.rate: unknown key"),
        ("train.lr", "fast", "sweeps/x.yaml: train.lr: expected a number"),
        ("name", None, "sweeps/x.yaml: name: expected a non-empty name"),
    ],
)
def test_validation_errors_name_the_yaml_path(path, value, expected):
    raw = spec_with(BASE, path, value)
    if expected is None:
        parse_spec(raw, LABEL)
        return
    with pytest.raises(SpecError) as info:
        parse_spec(raw, LABEL)
    message = str(info.value)
    assert expected in message, message
    assert "\n" not in message


def test_family_specific_parameter_needs_a_condition():
    raw = spec_with(FAMILIES, "search.params.model.levels", {"int": [2, 4]})  # no when: wavenet has no levels
    with pytest.raises(SpecError, match=r"search\.params\.model\.levels: wavenet has no config key 'levels'"):
        parse_spec(raw, LABEL)
    raw = spec_with(FAMILIES, "families.waveunet.blocks", 2)
    with pytest.raises(SpecError, match=r"families|blocks"):
        parse_spec(raw, LABEL)


def test_invalid_sampled_combination_is_caught_up_front():
    raw = spec_with(BASE, "search.params.data.augment.gain_min", {"uniform": [0.5, 0.95]})
    raw = spec_with(raw, "search.params.data.augment.gain_max", {"uniform": [0.6, 1.0]})
    with pytest.raises(
        SpecError, match=r"search\.params: the configuration .* is invalid: .*gain_min <= gain_max"
    ):
        parse_spec(raw, LABEL)


def test_overrides_and_smoke_test(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(
        yaml.safe_dump({**BASE, "smoke_test": {"budget.epochs": 1, "search.params.model.levels.int": [2, 3]}})
    )
    spec = load_spec(path, ["search.num_samples=7", "train.lr=0.002"])
    assert spec.num_samples == 7 and spec.fixed["train"]["lr"] == 0.002 and spec.epochs == 3
    smoke = load_spec(path, smoke_test=True)
    assert smoke.name == "unit-smoke" and smoke.epochs == 1
    assert smoke.param("model.levels").high == 3
    with pytest.raises(SpecError, match=r"--set colour: unknown spec key"):
        load_spec(path, ["colour=1"])
    with pytest.raises(SpecError, match=r"s\.yaml: search\.params\.model\.levels\.int: need low < high"):
        load_spec(path, ["search.params.model.levels.int=[4, 2]"])


def test_conditional_parameters_only_sampled_when_their_condition_holds():
    spec = parse_spec(FAMILIES, LABEL)
    space = spec.space()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        direction="maximize", sampler=optuna.samplers.TPESampler(seed=0, n_startup_trials=5)
    )
    seen_inputs = set()
    for i in range(30):
        trial = study.ask()
        space(trial)
        params = trial.params
        assert ("model.levels" in params) == (params["model.name"] == "waveunet")
        assert ("model.input" in params) == (params["model.name"] == "wavenet")
        assert ("model.head" in params) == (params["model.name"] == "wavenet")
        assert ("model.stft_n_fft" in params) == (params.get("model.input") == "stft")
        seen_inputs.add(params.get("model.input"))
        cfg = spec.resolve_trial(params)  # every sampled configuration resolves
        assert cfg.model_name == params["model.name"]
        study.tell(trial, float(i % 7))
    assert {"mulaw", "raw", "stft"} <= seen_inputs
    for params in random_samples(space, 30, seed=1):
        assert ("model.stft_n_fft" in params) == (params.get("model.input") == "stft")


def test_family_switch_takes_that_familys_fixed_keys():
    spec = parse_spec(FAMILIES, LABEL)
    raw = trial_raw_config(spec.fixed, spec.families, {"model.name": "wavenet", "model.input": "raw"})
    assert raw["model"]["blocks"] == 1 and "levels" not in raw["model"] and raw["model"]["input"] == "raw"
    cfg = spec.resolve_trial({"model.name": "waveunet", "model.levels": 4})
    assert cfg.model["levels"] == 4 and cfg.model["channels"] == 4


def test_grid_points_respect_conditions():
    raw = copy.deepcopy(FAMILIES)
    raw["search"] = {
        "algorithm": "grid",
        "params": {
            "model.name": {"choice": ["waveunet", "wavenet"]},
            "model.levels": {"int": [2, 3], "when": {"model.name": "waveunet"}},
            "model.input": {"choice": ["mulaw", "stft"], "when": {"model.name": "wavenet"}},
            "model.stft_n_fft": {"choice": [32, 64], "when": {"model.input": "stft"}},
        },
    }
    spec = parse_spec(raw, LABEL)
    points = grid_points(spec.params, spec.fixed, spec.families)
    # waveunet x 2 levels + wavenet mulaw + wavenet stft x 2 windows
    assert len(points) == 5 and spec.num_samples == 5
    assert {"model.name": "wavenet", "model.input": "stft", "model.stft_n_fft": 64} in points
    assert all("model.stft_n_fft" not in p for p in points if p.get("model.input") != "stft")
    raw["search"]["params"]["train.lr"] = {"loguniform": [1e-4, 1e-3]}
    with pytest.raises(SpecError, match=r"search\.params\.train\.lr: a loguniform range has no grid"):
        parse_spec(raw, LABEL)
    raw["search"]["params"].pop("train.lr")
    raw["search"]["num_samples"] = 3
    with pytest.raises(SpecError, match=r"search\.num_samples: grid search"):
        parse_spec(raw, LABEL)


@pytest.mark.parametrize("algorithm", ["optuna", "random", "grid"])
def test_search_algorithms_are_built(algorithm):
    from ray.tune import schedulers
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    from sepray.sweep.raytune.tuner import build_tuner_parts
    from sepray.sweep.trial import TrialContext

    raw = copy.deepcopy(BASE)
    raw["search"]["algorithm"] = algorithm
    raw["search"]["max_concurrent"] = 3
    raw["resources"] = {"cpu": 1, "gpu": 0}  # gpu: auto (the default) is resolved on a Ray cluster first
    if algorithm == "grid":
        raw["search"].pop("num_samples")
        raw["search"]["params"].pop("train.lr")
    spec = parse_spec(raw, LABEL)
    parts = build_tuner_parts(spec, TrialContext.of(spec, "sqlite:////tmp/unused.db", "parent"))
    tc = parts["tune_config"]
    assert isinstance(tc.scheduler, schedulers.ASHAScheduler)
    if algorithm == "grid":
        assert tc.search_alg is None and tc.max_concurrent_trials == 3 and tc.num_samples == 1
        grid = parts["param_space"][GRID_KEY]["grid_search"]
        assert len(grid) == 3 * 2
    else:
        assert isinstance(tc.search_alg, ConcurrencyLimiter) and tc.search_alg.max_concurrent == 3
        searcher = tc.search_alg.searcher
        assert isinstance(searcher, OptunaSearch) and tc.num_samples == 4
        expected = optuna.samplers.RandomSampler if algorithm == "random" else optuna.samplers.TPESampler
        assert isinstance(searcher._ot_study.sampler, expected)
        config = searcher.suggest("t1")  # the define-by-run space through Ray's searcher
        assert set(config) == {"model.levels", "model.upsampling", "train.lr"}
    rc = parts["run_config"]
    assert rc.failure_config.max_failures == 2 and rc.checkpoint_config.num_to_keep == 2


def test_shipped_specs_validate(tmp_path):
    specs = sorted((REPO / "sweeps").glob("*.yaml"))
    assert {p.name for p in specs} >= {"quickstart.yaml", "unet.yaml", "wavenet.yaml", "mulaw_vs_stft.yaml"}
    assert {p.name for p in specs} >= {"mir1k.yaml", "musdb.yaml"}
    for path in specs:
        required = (yaml.safe_load(path.read_text()).get("requires") or {}).keys()
        overrides = [f"{key}={tmp_path}" for key in required]  # the real-data specs: a dataset folder
        for smoke in (False, True):
            spec = load_spec(path, overrides, smoke_test=smoke)
            assert spec.params, path
            assert spec.num_samples >= 1
        if required:
            with pytest.raises(SpecError, match=f"{path}: data.path is not set: give the "):
                load_spec(path)


def test_required_keys_are_one_line_errors_until_set(tmp_path):
    raw = {**BASE, "requires": {"data.path": "the songs folder"}}
    with pytest.raises(SpecError) as err:
        parse_spec(raw, LABEL)
    assert (
        str(err.value) == "sweeps/x.yaml: data.path is not set: give the songs folder (--set data.path=...)"
    )
    assert parse_spec(raw, LABEL, [f"data.path={tmp_path}"]).fixed["data"]["path"] == str(tmp_path)
    assert parse_spec(spec_with(raw, "data.path", str(tmp_path)), LABEL).fixed["data"]["path"] == str(
        tmp_path
    )
    with pytest.raises(SpecError, match="requires: expected a mapping"):
        parse_spec({**BASE, "requires": ["data.path"]}, LABEL)


def test_driver_rejects_a_bad_spec_with_one_line(tmp_path):
    bad = spec_with(BASE, "search.params.model.levels", {"int": [2, 4], "when": {"model.name": "wavenet"}})
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad))
    proc = subprocess.run(
        [sys.executable, str(REPO / "sweeps" / "run.py"), str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith(f"sepray: error: {path}: search.params.model.levels:"), proc.stderr


def test_relative_data_paths_become_absolute_for_the_trials(tmp_path, monkeypatch):
    """Ray Tune runs each trial in its own working folder: the driver makes the spec's dataset roots and split
    files absolute against its own; `synthetic`, built-in split names and URIs stay as they are."""
    from sepray.sweep.driver import with_absolute_data_paths

    monkeypatch.chdir(tmp_path)
    raw = copy.deepcopy(BASE)
    raw["data"]["path"] = ["data/mir1k", {"path": "synthetic"}, {"path": "~/musdb", "split": "splits/m.yaml"}]
    spec = with_absolute_data_paths(parse_spec(raw, LABEL, ["search.num_samples=1"]))
    paths = spec.fixed["data"]["path"]
    assert paths[0] == str(tmp_path / "data" / "mir1k") and paths[1] == {"path": "synthetic"}
    assert paths[2] == {
        "path": str(Path("~/musdb").expanduser()),
        "split": str(tmp_path / "splits" / "m.yaml"),
    }
    trial = spec.resolve_trial({"model.levels": 3, "model.upsampling": "linear", "train.lr": 1e-3})
    assert trial.data.corpora()[0].path == str(tmp_path / "data" / "mir1k")
    single = {**copy.deepcopy(BASE), "data": {"path": "corpus", "split": "mir1k-standard"}}
    single_spec = with_absolute_data_paths(parse_spec(single, LABEL))
    assert single_spec.fixed["data"] == {"path": str(tmp_path / "corpus"), "split": "mir1k-standard"}
    assert with_absolute_data_paths(parse_spec(copy.deepcopy(BASE), LABEL)).fixed["data"] == BASE["data"]
