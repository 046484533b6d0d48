"""Fixtures several integration modules share: one token cluster and one smoke sweep run on it.

Package-scoped: torn down once the last test using them has run (tests/conftest.py puts their users' modules
in one pytest-xdist group: one worker runs them, one after the other, so the cluster starts once)."""

from __future__ import annotations

import subprocess

import pytest

from tests.integration.token_cluster import run_driver, start_token_cluster


@pytest.fixture(scope="package")
def token_cluster(tmp_path_factory):
    with start_token_cluster(tmp_path_factory.mktemp("cluster")) as cluster:
        yield cluster


@pytest.fixture(scope="package")
def cluster_smoke_sweep(token_cluster) -> subprocess.CompletedProcess:
    """`sweeps/run.py sweeps/quickstart.yaml --smoke-test --address HEAD` joining the token cluster, every trial
    logging through its tracking server: test_sweep_cluster checks how it ran, test_report_browser opens its
    report. Each test asserts its exit status itself."""
    return run_driver(token_cluster, "--address", token_cluster["address"])
