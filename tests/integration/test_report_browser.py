"""The sweep report in a real browser: the smoke sweep that test_sweep_cluster.py runs on a token cluster, every
trial logging through a real `mlflow server` (proxied artifacts; tests/integration/conftest.py), then headless
Chromium (driven over the DevTools protocol on a pipe, no extra package) loads the parent run's
``report/index.html`` from that server on 127.0.0.1 and checks that every ``<audio>`` can play, every image
decodes and the leaderboard has one row per trial; it saves a screenshot.

MLflow serves every artifact as a download (``Content-Disposition: attachment``, HTML as text/plain), so the
browser would save the page instead of showing it; the test rewrites those two headers of the page request
only. Its images and sounds are fetched from the server as they are, by their relative links."""

from __future__ import annotations

import base64
import json
import os
import select
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from sepray import names, tracking
from tests.procs import stop_group

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
NAME = "quickstart-smoke"

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary (apt-get install chromium)")

CHECK = """
(async () => {
  const wait = (ms) => new Promise((r) => setTimeout(r, ms));
  const audios = [...document.querySelectorAll('audio')];
  for (let i = 0; i < 200 && audios.some((a) => a.readyState < 1 && !a.error); i++) await wait(100);
  const imgs = [...document.querySelectorAll('img')];
  await Promise.all(imgs.map((im) => im.decode().catch(() => null)));
  return {
    rows: document.querySelectorAll('#leaderboard tr.trial').length,
    audio: audios.map((a) => ({src: a.currentSrc, ready: a.readyState, duration: a.duration,
                               error: a.error && a.error.code})),
    images: imgs.map((im) => ({src: im.currentSrc, width: im.naturalWidth, height: im.naturalHeight})),
    verdict: document.getElementById('verdict').textContent,
  };
})()
"""


class DevTools:
    """Chromium's DevTools protocol over ``--remote-debugging-pipe`` (fd 3 in, fd 4 out, NUL-separated JSON)."""

    def __init__(self, profile: Path):
        self.cmd_r, self.cmd_w = os.pipe()
        self.out_r, self.out_w = os.pipe()

        def fds():  # via fresh copies: a pipe end that already is fd 3 or 4 would stay close-on-exec
            cmd, out = os.dup(self.cmd_r), os.dup(self.out_w)
            os.dup2(cmd, 3)
            os.dup2(out, 4)

        self.proc = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--autoplay-policy=no-user-gesture-required", "--remote-debugging-pipe",
             f"--user-data-dir={profile}", "about:blank"],
            preexec_fn=fds, close_fds=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        os.close(self.cmd_r)
        os.close(self.out_w)
        self.buffer, self.next_id, self.events = b"", 0, []

    def _read(self, timeout: float = 120.0) -> dict:
        while b"\0" not in self.buffer:
            if not select.select([self.out_r], [], [], timeout)[0]:
                raise AssertionError(
                    f"chromium sent nothing for {timeout:.0f} s; last events: {self.events[-5:]}"
                )
            chunk = os.read(self.out_r, 1 << 20)
            if not chunk:
                raise AssertionError("chromium closed its DevTools pipe")
            self.buffer += chunk
        message, self.buffer = self.buffer.split(b"\0", 1)
        return json.loads(message)

    def send(self, method: str, session: str | None = None, wait: bool = True, **params):
        """Send a command; its result, or None right away when not ``wait`` (its reply becomes an event)."""
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self.cmd_w, json.dumps(message).encode() + b"\0")
        while wait:
            reply = self._read()
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise AssertionError(f"{method}: {reply['error']}")
                return reply["result"]
            self.events.append(reply)

    def wait_event(self, method: str, timeout: float = 120.0) -> dict:
        deadline = time.time() + timeout
        while time.time() < deadline:
            for i, event in enumerate(self.events):
                if event.get("method") == method:
                    return self.events.pop(i)
            self.events.append(self._read())
        raise AssertionError(f"no {method} in {timeout:.0f} s")

    def close(self) -> None:
        try:
            self.send("Browser.close")
        except (AssertionError, OSError):
            pass
        stop_group(self.proc)


@pytest.fixture(scope="module")
def served_sweep(token_cluster, cluster_smoke_sweep):
    sweep = cluster_smoke_sweep
    assert sweep.returncode == 0, f"{sweep.stdout[-3000:]}\n{sweep.stderr[-3000:]}"
    assert "report: artifact report/index.html" in sweep.stdout
    return token_cluster["url"], token_cluster["work"]


def test_report_plays_its_audio_and_shows_its_images(served_sweep, tmp_path):
    url, work = served_sweep
    parent = next(r for r in tracking.find_runs(NAME, uri=url) if r.data.tags.get(names.KIND) == "sweep")
    trials = tracking.child_runs(NAME, parent.info.run_id, url, kind="trial")
    assert parent.info.artifact_uri.startswith("mlflow-artifacts:/")
    root = parent.info.artifact_uri.removeprefix("mlflow-artifacts:/").strip("/")
    page = f"{url}/api/2.0/mlflow-artifacts/artifacts/{root}/{names.REPORT}"  # relative links resolve here
    browser = DevTools(tmp_path / "profile")
    try:
        target = browser.send("Target.createTarget", url="about:blank")["targetId"]
        session = browser.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        browser.send("Page.enable", session)
        pattern = {
            "urlPattern": "*/report/index.html",
            "resourceType": "Document",
            "requestStage": "Response",
        }
        browser.send("Fetch.enable", session, patterns=[pattern])
        browser.send(
            "Page.navigate", session, wait=False, url=page
        )  # it answers once the page is let through
        paused = browser.wait_event("Fetch.requestPaused")["params"]
        headers = [
            h
            for h in paused["responseHeaders"]
            if h["name"].lower() not in ("content-disposition", "content-type")
        ] + [{"name": "Content-Type", "value": "text/html; charset=utf-8"}]
        assert paused["responseStatusCode"] == 200
        browser.send(
            "Fetch.continueResponse",
            session,
            requestId=paused["requestId"],
            responseCode=200,
            responseHeaders=headers,
        )
        browser.wait_event("Page.loadEventFired")
        result = browser.send(
            "Runtime.evaluate", session, expression=CHECK, awaitPromise=True, returnByValue=True
        )["result"]["value"]
        shot = browser.send("Page.captureScreenshot", session, format="png", captureBeyondViewport=True)
        screenshot = tmp_path / "report.png"
        screenshot.write_bytes(base64.b64decode(shot["data"]))
        if os.environ.get("SEPRAY_TEST_ARTIFACTS"):  # pytest keeps only its last few tmp folders
            keep = Path(os.environ["SEPRAY_TEST_ARTIFACTS"])
            keep.mkdir(parents=True, exist_ok=True)
            screenshot = Path(shutil.copy(screenshot, keep / "report_browser.png"))
        print(f"screenshot of the sweep report: {screenshot}")
    finally:
        browser.close()
    assert result["rows"] == len(trials) >= 2
    assert result["audio"], "no audio players"
    for audio in result["audio"]:
        assert audio["src"].startswith(url) and audio["error"] is None, audio
        assert audio["ready"] >= 1 and audio["duration"] > 0, audio
    assert len(result["images"]) >= 4
    for image in result["images"]:
        assert image["src"].startswith(url) and image["width"] > 0 and image["height"] > 0, image
    assert "Best by test_sdr_vocals" in result["verdict"]
