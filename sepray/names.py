"""Every MLflow tag, param, metric and artifact name sepray writes or reads, and every key a sweep trial reports
to Tune besides its metrics, defined once (imports nothing).

Tags are ``sepray.<name>``; metrics are ``<split>_sdr[_<baseline>][_<source>]``, e.g. ``valid_sdr_vocals``,
``test_sdr``, ``test_sdr_halfmix_accompaniment`` (museval v4), and ``<split>_<global>[_<source>]`` for the BSS Eval
v3 length-weighted means, e.g. ``test_gnsdr_vocals``. A trial's outcome is one of :data:`OUTCOMES`.
"""

from __future__ import annotations

# -- tags --------------------------------------------------------------------------------------------------
KIND = "sepray.kind"  # train | sweep | trial
MODEL = "sepray.model"
SIGNATURE = "sepray.signature"  # RunConfig.signature(): one child run per configuration
TRIAL_ID = "sepray.trial_id"
RAY_NODE_ID = "sepray.ray_node_id"  # the Ray node a trial's run trained on (the last one, after a retry)
RAY_NODE_IDS = "sepray.ray_node_ids"  # every Ray node it trained on, in order, comma-separated
# what a trial's process saw: its CUDA_VISIBLE_DEVICES ("" when Ray gave it no GPU, "unset" outside Ray), and
# the torch device it trained on (cpu, cuda)
CUDA_VISIBLE_DEVICES = "sepray.cuda_visible_devices"
TRAIN_DEVICE = "sepray.train_device"
RETRIES = "sepray.retries"  # how many times Ray restarted the trial (node died, crash) from a checkpoint
PREVIOUS_TRIAL_ID = "sepray.previous_trial_id"
SAMPLED = "sepray.sampled"  # JSON of the searched values that were active
NUM_PARAMETERS = "sepray.num_parameters"
EPOCHS = "sepray.epochs"
TRAIN_SECONDS = "sepray.train_seconds"  # at the end of training (the metric: TRAIN_SECONDS_METRIC)
OUTCOME = "sepray.outcome"
CUT_BY = "sepray.cut_by"  # what cut a run (outcome cut_by_time): SWEEP_LIMIT | TRIAL_LIMIT | TRAIN_LIMIT
LAST_ERROR = "sepray.last_error"  # why a trial (or a sweep) failed, or why its last attempt crashed
EXCERPT_ERROR = "sepray.excerpt_error"
BEST = "sepray.best"  # on the winning trial's run
SWEEP = "sepray.sweep"
SWEEP_STATUS = "sepray.sweep_status"  # finished | interrupted
BEST_RUN_ID = "sepray.best_run_id"  # on the parent run
NO_BEST_REASON = "sepray.no_best_reason"  # on the parent run of a sweep that has no best model: why
REGISTERED_MODEL = "sepray.registered_model"
VERSION = "sepray.version"
SMOKE_TEST = "sepray.smoke_test"
# an ensemble's run (KIND and, in a sweep's leaderboard, OUTCOME = ENSEMBLE)
MEMBERS = "sepray.members"  # its members' run ids, comma-separated, in the order of its package
ENSEMBLE_VERDICT = (
    "sepray.ensemble_verdict"  # a sweep's ensemble against the best single trial (report_stats)
)
# MLflow's own tags: the run's display name, its description (markdown), the experiment's kind in the UI
RUN_NAME = "mlflow.runName"
NOTE = "mlflow.note.content"
EXPERIMENT_KIND = "mlflow.experimentKind"
MODEL_TRAINING = "custom_model_development"  # EXPERIMENT_KIND of a model-training experiment
MODEL_TRAINING_VIEW = (
    "#/experiments/{experiment_id}/runs?workflowType=machine_learning"  # the UI's Runs table
)

# -- artifacts ---------------------------------------------------------------------------------------------
PACKAGE = "model"  # the model package folder (config.json + state_dict.pt) of a trained run
RUN_CONFIG = "run_config.json"  # the resolved run config: an artifact of a trained run; beside a checkpoint
EXCERPT = "excerpt"  # a finished trial's audio excerpt folder (WAVs + spectrograms.png)
REPORT = "report/index.html"  # the sweep report on the parent run (images, audio beside it in report/)

# -- params ------------------------------------------------------------------------------------------------
# besides the flattened resolved config (``model.levels``, ``train.lr``...)
NUM_PARAMETERS_PARAM = "num_parameters"  # the model's parameter count (also the tag NUM_PARAMETERS on trials)

# -- outcomes of a trial (tag OUTCOME) and statuses of a sweep (tag SWEEP_STATUS) -----------------------------
RUNNING = "running"
FINISHED = "finished"
STOPPED_EARLY = "stopped_early"  # ASHA stopped it (no model package)
CUT_BY_TIME = "cut_by_time"  # a time limit stopped it; its run keeps the model of its last completed epoch
FAILED = "failed"
INTERRUPTED = "interrupted"
ENSEMBLE = "ensemble"  # not a trial: a sweep's ensemble of its top trials (its run's KIND too)
OUTCOMES = (RUNNING, FINISHED, STOPPED_EARLY, CUT_BY_TIME, FAILED, INTERRUPTED, ENSEMBLE)
MODEL_OUTCOMES = (FINISHED, CUT_BY_TIME)  # a FINISHED run with one of these holds a model package
# the two time limits of a sweep (spec keys, the value of the CUT_BY tag)
SWEEP_LIMIT = "budget.sweep_seconds"  # Tune's time_budget_s: Tune stops every running trial
TRIAL_LIMIT = "budget.trial_seconds"  # train.max_seconds: the trial ends after the epoch that passes it
TRAIN_LIMIT = "train.max_seconds"  # what cut a `sepray train` run: it ends after the epoch that passes it

# -- metrics -----------------------------------------------------------------------------------------------
EPOCH = "epoch"  # epochs trained so far, logged after each (step = epoch); also in each Tune result
TRAIN_SECONDS_METRIC = "train_seconds"  # seconds spent in training steps so far (step = epoch)
LR = "lr"  # the learning rate of the epoch just trained
STEPS_PER_SECOND = "steps_per_second"  # optimizer steps per second of the epoch just trained
TRAIN_LOSS_STEP = "train_loss_step"  # `sepray train`: the loss every few steps (step = optimizer step)
COMPLETED = "completed"  # 1.0, once, when a trial completed its whole budget of epochs
VALID_LOSS = "valid_loss"
TRAIN_LOSS = "train_loss"  # the mean training objective of an epoch (the model's whole training loss)
DATA_WAIT_SHARE = "data_wait_share"  # share of an epoch's training time spent waiting for the next batch
TRAIN_CONFUSION_LOSS = "train_confusion_loss"  # domain classifier cross-entropy (UMT confusion loss)
TRAIN_DOMAIN_ACCURACY = "train_domain_accuracy"  # domain classifier accuracy on the training crops
# the extra terms a model's training_loss may report, by the key it uses -> the metric logged for it
TRAIN_EXTRAS = {"confusion_loss": TRAIN_CONFUSION_LOSS, "domain_accuracy": TRAIN_DOMAIN_ACCURACY}
BASELINES = ("mix", "halfmix")  # the trivial estimates: the mixture, half the mixture

# -- what a sweep trial reports to Tune besides its metrics (and EPOCH): Tune's live table, the driver read them
RESULT_SIGNATURE = "signature"  # the trial's RunConfig.signature()
RESULT_RUN_ID = "mlflow_run_id"  # the child run that holds its results (another trial's when it reused them)
RESULT_DONE_EPOCHS = "done_epochs"  # epochs the trial's own run has trained
RESULT_OUTCOME = "outcome"  # running | finished | cut_by_time | failed | reused
RESULT_OWNER = "owner"  # True when the trial trained into its own run
RESULT_REUSED = "reused"  # True when the trial replayed another trial's results
RESULT_OWNER_TRIAL = "owner_trial_id"  # with RESULT_REUSED: the trial whose results it replayed
RESULT_FAILED = "failed"  # True on a trial's last report when it failed for good (no retry)
RESULT_ERROR = "error"  # with RESULT_FAILED: why
REUSED = "reused"  # the RESULT_OUTCOME of a trial that replayed another trial's results

# -- test metrics (`sepray score --metric`, `sepray evaluate --metric`, a sweep spec's `test_metric`) -----------
MUSEVAL_V4 = "museval_v4"  # framewise SDR, median over 1 s frames then songs (sepray's default)
BSS_EVAL_V3 = "bss_eval_v3"  # bss_eval_sources over whole clips, NSDR; length-weighted GNSDR / GSIR / GSAR
TEST_METRICS = (MUSEVAL_V4, BSS_EVAL_V3)
BSS_GLOBALS = ("gnsdr", "gsir", "gsar", "gsdr")  # the length-weighted means of NSDR / SIR / SAR / SDR
# a sweep's ensemble against its best single trial: the mean per-test-song difference of select's score
# (ensemble minus trial, dB) and its 95 % paired bootstrap interval
ENSEMBLE_GAIN, ENSEMBLE_GAIN_LOW, ENSEMBLE_GAIN_HIGH = (
    "ensemble_gain",
    "ensemble_gain_low",
    "ensemble_gain_high",
)


def fit_metric(source: str | None = None) -> str:
    """``fit_valid_sdr_vocals``: an ensemble's score on the full validation songs its weights were fitted on (the
    mean over songs of museval SDR); no source: the mean over the fitted sources, the fit's objective."""
    return "_".join(["fit", sdr_metric("valid", source)])


def evaluation_artifact(split: str, ext: str = "json") -> str:
    """``evaluation/test_sdr.json``: an evaluation's per-song result (``json``) or its table (``txt``)."""
    return f"evaluation/{split}_sdr.{ext}"


def x_realtime_metric(split: str) -> str:
    """``test_x_realtime``: seconds of audio separated per second of wall time when evaluating ``split``."""
    return f"{split}_x_realtime"


def global_metric(split: str, score: str, source: str | None = None) -> str:
    """``global_metric("test", "gnsdr", "vocals")`` -> ``test_gnsdr_vocals``; no source -> the mean over sources."""
    return "_".join([split, score, *([source] if source else [])])


def sdr_metric(split: str, source: str | None = None, baseline: str | None = None) -> str:
    """``sdr_metric("valid", "vocals")`` -> ``valid_sdr_vocals``; no source -> the mean over sources."""
    return "_".join([split, "sdr", *([baseline] if baseline else []), *([source] if source else [])])
