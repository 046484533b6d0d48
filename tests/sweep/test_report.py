"""The sweep report on a hand-made sqlite store (no Ray): one leaderboard row per trial, audio players whose
relative links exist in the logged report folder, the verdict, the parent's note; and trial run names."""

from __future__ import annotations

import dataclasses
import json
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import soundfile as sf

from sepray import names, tracking
from sepray.cli import main
from sepray.sweep.naming import short_value, trial_run_name
from sepray.sweep.report import SearchedKey, SweepView, leaderboard_text, publish_report, rebuild_report

SPEC = SweepView(
    name="report-test",
    metric="valid_sdr_vocals",
    mode="max",
    select="test_sdr_vocals",
    top_k=2,
    params=(SearchedKey("model.levels"), SearchedKey("train.lr"), SearchedKey("model.upsampling")),
)


class Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.rows, self.audio, self.images, self.scripts = 0, [], [], 0

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "tr" and "trial" in (a.get("class") or "").split():
            self.rows += 1
        if tag == "audio":
            self.audio.append(a["src"])
        if tag == "img":
            self.images.append(a["src"])
        if tag == "script":
            self.scripts += 1


BSS_SPEC = dataclasses.replace(SPEC, select="test_gnsdr_vocals", test_metric="bss_eval_v3")
SECONDS = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]  # the test songs' lengths, for the bss_eval_v3 sweep


def _nsdr(offset: float, j: int) -> float:
    return 2.0 + offset + 0.5 * j


def _make_sweep(tmp: Path, spec=SPEC) -> tuple[str, str]:
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    tracking.ensure_experiment(spec.name, uri)
    parent = tracking.start_run(spec.name, "sweep-report-test", {names.KIND: "sweep"}, uri=uri)
    parent.log_params(
        {
            "metric": spec.metric,
            "mode": "max",
            "select": spec.select,
            "top_k": 2,
            "searched": "model.levels,train.lr,model.upsampling",
            "test_metric": spec.test_metric,
        }
    )
    rng = np.random.default_rng(0)
    songs = [f"song{i}" for i in range(6)]
    wav = tmp / "excerpt"
    wav.mkdir()
    for name in (
        "mixture",
        "vocals_estimate",
        "vocals_reference",
        "accompaniment_estimate",
        "accompaniment_reference",
    ):
        sf.write(wav / f"{name}.wav", rng.normal(0, 0.1, 8000).astype("float32"), 8000)
    trials = [  # (outcome, levels, lr, valid, test offset)
        ("finished", 4, 2.8e-3, 5.0, 3.0),
        ("finished", 3, 1.0e-3, 4.0, 0.0),
        ("stopped_early", 2, 6.0e-4, 1.0, None),
        ("failed", 3, 5.0e-4, None, None),
    ]
    for i, (outcome, levels, lr, valid, offset) in enumerate(trials):
        sampled = {"model.levels": levels, "train.lr": lr, "model.upsampling": "linear"}
        tags = {
            names.KIND: "trial",
            names.MODEL: "waveunet",
            names.OUTCOME: outcome,
            names.SAMPLED: json.dumps(sampled),
        }
        if outcome == "failed":
            tags[names.LAST_ERROR] = "RuntimeError: out of memory"
        run = tracking.start_run(spec.name, trial_run_name("waveunet", sampled), tags, parent.run_id, uri)
        run.log_params({"num_parameters": 1000 * (i + 1), "model.name": "waveunet"})
        for epoch in range(1, (3 if outcome == "finished" else 2)):
            if valid is not None:
                run.log_metrics({"valid_sdr_vocals": valid - 1 / epoch, "epoch": epoch}, step=epoch)
        if offset is not None:
            per_song = {
                s: {"vocals": 4.0 + offset + 0.1 * j, "accompaniment": 6.0 + 0.1 * j}
                for j, s in enumerate(songs)
            }
            evaluation = {"songs": per_song}
            if spec.test_metric == "bss_eval_v3":
                evaluation["bss_eval_v3"] = {
                    "songs": {
                        s: {
                            src: {"nsdr": _nsdr(offset, j), "sir": 9.0, "sar": 8.0, "sdr": 3.0}
                            for src in per_song[s]
                        }
                        for j, s in enumerate(songs)
                    },
                    "seconds": dict(zip(songs, SECONDS, strict=True)),
                }
                weighted = float(np.dot([_nsdr(offset, j) for j in range(6)], SECONDS) / sum(SECONDS))
                run.log_metrics({"test_gnsdr_vocals": weighted, "test_gnsdr_accompaniment": weighted})
            run.log_text(json.dumps(evaluation), "evaluation/test_sdr.json")
            run.log_metrics(
                {
                    "test_sdr_vocals": 4.25 + offset,
                    "test_sdr_accompaniment": 6.25,
                    "test_x_realtime": 30.0 / (i + 1),
                }
            )
            run.log_artifacts(wav, "excerpt")
        run.end("FINISHED" if outcome == "finished" else "KILLED")
    parent.set_tags({names.BEST_RUN_ID: tracking.child_runs(spec.name, parent.run_id, uri)[0].info.run_id})
    return uri, parent.run_id


def test_report_has_one_row_per_trial_and_playable_relative_audio(tmp_path):
    uri, parent_id = _make_sweep(tmp_path)
    where = publish_report(SPEC, parent_id, uri)
    assert names.REPORT in where and "workflowType=machine_learning" in where
    folder = tracking.download_artifacts(parent_id, "report", tmp_path / "dl", uri)
    text = (folder / "index.html").read_text()
    page = Page()
    page.feed(text)
    assert page.rows == 4 and page.scripts == 0
    assert len(page.audio) == 2 * 5  # the two finished trials: mixture + estimate and reference per source
    for link in page.audio + page.images:
        assert not link.startswith(("/", "http:", "https:", "data:")) and (folder / link).is_file(), link
    assert {"images/curves.png", "images/pareto_speed.png", "images/parallel.png"} <= set(page.images)
    assert "distinguishable" in text and "RuntimeError: out of memory" in text and "stopped early" in text
    assert "at least 4 trials" in text  # 3 trials with a metric value: importance is explained, not drawn
    inline = Page()
    inline.feed((folder / "inline.html").read_text())
    assert inline.rows == 4 and all(s.startswith("data:audio/") for s in inline.audio)
    note = tracking.get_run(parent_id, uri).data.tags[names.NOTE]
    assert names.REPORT in note and "#/experiments/" in note and "workflowType=machine_learning" in note
    experiment = tracking.client(uri).get_experiment_by_name(SPEC.name)
    assert experiment.tags[names.EXPERIMENT_KIND] == names.MODEL_TRAINING


def test_a_gnsdr_sweep_reports_length_weighted_gnsdr_and_compares_by_it(tmp_path):
    uri, parent_id = _make_sweep(tmp_path, BSS_SPEC)
    out = tmp_path / "local"
    rebuild_report(
        parent_id, uri, out
    )  # the view read back from the parent's params: test_metric bss_eval_v3
    text = (out / "index.html").read_text()
    assert "test GNSDR vocals (dB): length-weighted mean [95% CI]" in text and "BSS Eval v3" in text
    best = float(np.dot([_nsdr(3.0, j) for j in range(6)], SECONDS) / sum(SECONDS))  # 6.33, plain mean 6.25
    assert f"{best:.2f} [" in text and "test SDR vocals (dB, museval median)" in text
    assert "Best by test_gnsdr_vocals" in text and "distinguishable: best minus runner-up +3.00 dB" in text
    board = leaderboard_text(parent_id, uri)
    assert "gnsdr vocal" in board and f"{best:.2f}" in board


def test_an_ensemble_gets_its_own_row_and_line_and_the_verdict_still_compares_trials(tmp_path):
    """A sweep's ensemble child run (the winner here): a row "E" after the trials in the report and in `sepray
    runs`, a paragraph with its verdict, per-song intervals from its evaluation; best-vs-runner-up stays trials."""
    uri, parent_id = _make_sweep(tmp_path)
    verdict = (
        "ensemble of #1 + #2 (run x, weights #1 0.60, #2 0.40): test_sdr_vocals 7.75 dB, +0.50 dB ... better"
    )
    tags = {names.KIND: "ensemble", names.MODEL: "ensemble", names.OUTCOME: "ensemble"}
    run = tracking.start_run(
        SPEC.name, "ensemble of #1 + #2", tags | {names.ENSEMBLE_VERDICT: verdict}, parent_id, uri
    )
    per_song = {f"song{j}": {"vocals": 7.5 + 0.1 * j, "accompaniment": 6.5} for j in range(6)}
    run.log_text(json.dumps({"songs": per_song}), "evaluation/test_sdr.json")
    run.log_params({"num_parameters": 3000})
    run.log_metrics({"test_sdr_vocals": 7.75, "test_sdr_accompaniment": 6.5, "test_x_realtime": 10.0})
    run.end("FINISHED")
    tracking.Run(parent_id, uri).set_tags({names.BEST_RUN_ID: run.run_id})
    publish_report(SPEC, parent_id, uri)
    text = (tracking.download_artifacts(parent_id, "report", tmp_path / "dl", uri) / "index.html").read_text()
    page = Page()
    page.feed(text)
    assert page.rows == 4 and text.count("<tr class='ensemble best'>") == 1
    assert "<b>Ensemble (the winner):</b> ensemble of #1 + #2 (run x, weights #1 0.60, #2 0.40)" in text
    assert "7.75 [" in text  # its per-song median with the bootstrap interval
    assert "Best by test_sdr_vocals: trial #1; runner-up: trial #2" in text  # trials only
    board = leaderboard_text(parent_id, uri).splitlines()
    row = next(line for line in board if run.run_id in line)
    assert row.startswith("E* ") and "ensemble" in row and "7.75" in row
    assert [line.split()[0] for line in board[4:8]] == ["1", "2", "3", "4"]  # the trials keep their ranks


def test_report_and_runs_find_the_sweep_by_name(tmp_path, monkeypatch, capsys):
    uri, parent_id = _make_sweep(tmp_path)
    out = tmp_path / "local"
    assert parent_id in rebuild_report(SPEC.name, uri, out)
    assert (out / "index.html").is_file() and any((out / "audio").rglob("mixture.wav"))
    assert (out / ".sepray-report.json").is_file()  # so that the next `--out local` may replace it
    board = leaderboard_text(parent_id, uri)
    assert board.count("waveunet") >= 4 and "1*" in board
    # `sepray report NAME --out DIR` where DIR is the user's own site used to overwrite its index.html, exit 0
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text("my own site")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    capsys.readouterr()
    assert main(["report", SPEC.name, "--out", str(site)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"sepray: error: {site}: folder was not written by sepray report (no .sepray-report.json); not "
        "replacing it (move it away or choose another --out folder)"
    )
    assert [p.name for p in site.iterdir()] == ["index.html"] and (
        site / "index.html"
    ).read_text() == "my own site"


def test_trial_run_names_are_family_and_searched_values():
    sampled = {"model.name": "waveunet", "model.levels": 4, "model.channels": 16, "train.lr": 0.0028}
    assert trial_run_name("waveunet", sampled) == "waveunet levels=4 channels=16 lr=2.8e-3"
    assert [short_value(v) for v in (0.75, 1e-4, 3.0, [3, 5], "linear", True)] == [
        "0.75",
        "1e-4",
        "3",
        "[3,5]",
        "linear",
        "True",
    ]
