"""What the docs tell users to run is safe: every `mlflow server` command shown (README.md, docs/*.md,
cluster.yaml) that listens beyond the loopback requires a login (MLflow's basic-auth app)."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def mlflow_server_commands(text: str) -> list[str]:
    """Each `mlflow server ...` command in ``text``, with its shell continuation lines (and YAML folded lines)."""
    joined = re.sub(r"\\\n\s*", " ", text)  # shell line continuations
    commands = []
    for line in joined.splitlines():
        if re.search(r"\bmlflow server\b", line) and "--" in line:
            commands.append(line.strip())
    return commands


def test_every_exposed_mlflow_server_in_the_docs_requires_a_login():
    sources = [REPO / "README.md", REPO / "cluster.yaml", *sorted((REPO / "docs").glob("*.md"))]
    exposed = []
    for path in sources:
        text = path.read_text()
        if path.suffix == ".yaml":  # folded `>-` blocks: one command over several indented lines
            text = re.sub(r"\n\s+(?=--)", " ", text)
        for command in mlflow_server_commands(text):
            host = re.search(r"--host[ =](\S+)", command)
            if host and host.group(1) not in ("127.0.0.1", "localhost", "::1"):
                exposed.append((path.name, command))
                assert "--app-name basic-auth" in command, f"{path}: {command}"
    assert {name for name, _ in exposed} >= {"sweeps.md", "cluster.yaml"}  # the examples are found
