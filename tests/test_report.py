"""The HTML report: built from a run's database, opened in a real (headless) browser.

The browser tests drive Debian's ``chromium`` over the DevTools protocol (a websocket): they wait for
the page's own signal that every chart has drawn (``body[data-charts-drawn]``), never a fixed sleep,
collect console errors and uncaught exceptions, and save a screenshot under the test's tmp_path.
They are skipped where chromium or websocket-client is absent (.ci/run installs chromium).
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
from typer.testing import CliRunner

from trexsim.cli import app
from trexsim.records.report import write_report

runner = CliRunner()


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


class Browser:
    """A headless chromium and one page, driven over the DevTools protocol."""

    def __init__(self, profile: Path, timeout_s: float = 120.0):
        import websocket

        self.timeout_s = timeout_s
        self.proc = subprocess.Popen(
            [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
             "--no-default-browser-check", "--disable-extensions", "--remote-debugging-port=0",
             f"--user-data-dir={profile}", "--window-size=1400,1000", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        # chromium prints its DevTools address once it listens; its stderr is read on a thread throughout, so that
        # it never blocks on a full pipe and a chromium that never starts is a timeout here, not a hang
        import queue
        import threading

        lines: queue.Queue = queue.Queue()
        threading.Thread(target=lambda: [lines.put(line) for line in self.proc.stderr] + [lines.put(None)],
                         daemon=True).start()
        port, seen = None, []
        deadline = time.monotonic() + timeout_s
        while port is None:
            try:
                line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                line = None
            if line is None:
                self.proc.kill()
                raise RuntimeError("chromium did not start: " + "".join(seen[-20:]))
            seen.append(line)
            m = re.search(r"DevTools listening on ws://[^:]+:(\d+)/", line)
            if m:
                port = int(m.group(1))
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=30) as resp:
            pages = [t for t in json.load(resp) if t["type"] == "page"]
        self.ws = websocket.create_connection(pages[0]["webSocketDebuggerUrl"], timeout=timeout_s, suppress_origin=True)
        self.next_id = 0
        self.errors: list[str] = []
        self.loaded = False
        self.requests: list[str] = []
        for method in ("Runtime.enable", "Page.enable", "Log.enable", "Network.enable"):
            self.call(method)

    def _event(self, msg: dict) -> None:
        method, params = msg.get("method"), msg.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            self.errors.append("console: " + " ".join(str(a.get("value", a.get("description"))) for a in params["args"]))
        elif method == "Runtime.exceptionThrown":
            d = params["exceptionDetails"]
            self.errors.append(f"exception: {d.get('text')} {d.get('exception', {}).get('description', '')}")
        elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
            self.errors.append(f"log: {params['entry'].get('text')} {params['entry'].get('url', '')}")
        elif method == "Network.requestWillBeSent":
            url = params["request"]["url"]
            if not url.startswith(("file:", "data:", "about:", "blob:")):
                self.requests.append(url)
        elif method == "Page.loadEventFired":
            self.loaded = True

    def call(self, method: str, **params):
        self.next_id += 1
        me = self.next_id
        self.ws.send(json.dumps({"id": me, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == me:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self._event(msg)

    def evaluate(self, expression: str):
        return self.call("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")

    def open(self, url: str) -> None:
        self.loaded = False
        self.call("Page.navigate", url=url)
        deadline = time.monotonic() + self.timeout_s
        while not self.loaded:  # wait for the load event
            if time.monotonic() > deadline:
                raise TimeoutError("the page did not load")
            self._event(json.loads(self.ws.recv()))

    def wait_for(self, expression: str):
        """Evaluate ``expression`` until it is truthy: the page's async work is awaited in the browser itself."""
        script = ("new Promise(function (ok) { (function poll() { var v = (" + expression + ");"
                  " if (v) ok(v); else setTimeout(poll, 50); })(); })")
        result = self.call("Runtime.evaluate", expression=script, awaitPromise=True, returnByValue=True,
                           timeout=int(self.timeout_s * 1000))
        return result["result"].get("value")

    def screenshot(self, path: Path) -> None:
        height = self.evaluate("document.documentElement.scrollHeight")
        self.call("Emulation.setDeviceMetricsOverride", width=1400, height=min(int(height), 12000), deviceScaleFactor=1,
                  mobile=False)
        data = self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)["data"]
        path.write_bytes(base64.b64decode(data))

    def close(self) -> None:
        try:
            self.ws.close()
        finally:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()


@pytest.fixture(scope="module")
def browser():
    if _chromium() is None:
        pytest.skip("chromium is not installed (apt-get install chromium; .ci/run does)")
    pytest.importorskip("websocket", reason="websocket-client is not installed")
    profile = Path(tempfile.mkdtemp(prefix="trexsim-chromium-"))
    b = Browser(profile)
    yield b
    b.close()
    shutil.rmtree(profile, ignore_errors=True)


def _run(tmp_path: Path, config: dict, name: str, *extra: str) -> Path:
    cfg = tmp_path / f"{name}.json"
    cfg.write_text(json.dumps(config))
    out = tmp_path / name
    r = runner.invoke(app, ["run", str(cfg), "--out", str(out), "--no-plots", "-q", *extra])
    assert r.exit_code == 0, r.output
    return out


@pytest.fixture(scope="module")
def community_runs(tmp_path_factory):
    """The bundled community example for a day, with two settlement mechanisms (batteries, a PV surplus)."""
    import pyjson5

    from trexsim.cli import _example_path

    tmp = tmp_path_factory.mktemp("runs")
    config = pyjson5.decode(_example_path("community").read_text())
    config["study"]["days"] = 1
    a = _run(tmp, config, "average")
    config["market"]["settlement"] = "exact_price"
    b = _run(tmp, config, "other")
    return a, b


def _check_in_browser(browser: Browser, report: Path, shot: Path) -> dict:
    browser.errors.clear()
    browser.requests.clear()
    browser.open(report.resolve().as_uri())
    drawn = browser.wait_for("document.body.dataset.chartsDrawn")
    state = browser.evaluate("JSON.stringify({total: +document.body.dataset.chartsTotal, drawn: +document.body.dataset.chartsDrawn,"
                             " divs: document.querySelectorAll('div.chart').length,"
                             " plots: document.querySelectorAll('div.chart[data-drawn] .main-svg').length,"
                             " errors: document.getElementById('errors').textContent})")
    browser.screenshot(shot)
    state = json.loads(state)
    assert drawn is not None
    assert browser.errors == [], browser.errors
    assert browser.requests == [], browser.requests  # offline: nothing fetched from the network
    assert state["errors"] == ""
    assert state["total"] == state["divs"] == state["drawn"] and state["plots"] >= state["total"] > 0, state
    assert shot.stat().st_size > 10_000
    return state


def test_run_writes_a_self_contained_report(community_runs):
    run, _ = community_runs
    page = (run / "report.html").read_text()
    assert "Plotly" in page and "<script src" not in page  # every script inline: opens offline
    outside_scripts = re.sub(r"<script.*?</script>", "", page, flags=re.S)
    assert not re.search(r"(src|href)=['\"]https?://", outside_scripts)
    for title in ("Load and PV per household", "Settlement prices against the grid", "Energy traded in the market",
                  "Bills: with the market", "Shares of the market", "Battery state of charge"):
        assert title in page


def test_report_without_report_and_the_command(tmp_path, two_houses):
    two_houses["study"]["days"] = 30 / 1440
    out = _run(tmp_path, two_houses, "small", "--no-report")
    assert not (out / "report.html").exists()
    r = runner.invoke(app, ["report", str(out)])
    assert r.exit_code == 0, r.output
    assert (out / "report.html").exists()
    r = runner.invoke(app, ["report", str(tmp_path / "nothing")])
    assert r.exit_code == 2 and "no run database" in r.output and not (tmp_path / "nothing").exists()


def test_long_runs_are_binned(tmp_path, two_houses):
    two_houses["study"]["days"] = 2
    out = _run(tmp_path, two_houses, "long", "--no-report")
    report = write_report(out)
    data = json.loads(re.search(r"id='report-data'>(.*?)</script>", report.read_text(), re.S).group(1).replace("<\\/", "</"))
    longest = max(len(t.get("x", [])) for c in data["charts"] for t in c["traces"])
    assert longest == 2 * 24 * 12  # 2880 rounds > 2000: binned per 5 min


def test_report_draws_in_a_browser(browser, community_runs, tmp_path):
    run, _ = community_runs
    state = _check_in_browser(browser, run / "report.html", tmp_path / "report.png")
    assert state["total"] >= 7


def test_comparison_draws_side_by_side_on_the_same_axes(browser, community_runs, tmp_path):
    a, b = community_runs
    out = tmp_path / "compare.html"
    r = runner.invoke(app, ["report", str(a), str(b), "--out", str(out)])
    assert r.exit_code == 0, r.output
    state = _check_in_browser(browser, out, tmp_path / "compare.png")
    assert state["total"] >= 14
    ranges = json.loads(browser.evaluate(
        "JSON.stringify(['chart-prices-0', 'chart-prices-1'].map(function (id) {"
        " return document.getElementById(id)._fullLayout.yaxis.range; }))"))
    assert ranges[0] == ranges[1]


def test_powerflow_and_tc_draw(browser, tmp_path):
    out = tmp_path / "tc"
    r = runner.invoke(app, ["run", "--example", "tc", "--out", str(out), "--no-plots", "-q"])
    assert r.exit_code == 0, r.output
    page = (out / "report.html").read_text()
    for title in ("Powerflow: voltage envelope", "Powerflow: transformer and line loading", "Transactive control schedule"):
        assert title in page
    _check_in_browser(browser, out / "report.html", tmp_path / "tc.png")



def test_a_replayed_powerflow_is_in_the_report(tmp_path, two_houses):
    pytest.importorskip("opendssdirect", reason="the powerflow extra is not installed")
    two_houses["study"]["days"] = 30 / 1440
    out = _run(tmp_path, two_houses, "replayed", "--no-report")
    assert runner.invoke(app, ["powerflow", str(out)]).exit_code == 0
    page = write_report(out).read_text()
    assert "Powerflow: voltage envelope" in page and "Powerflow: transformer and line loading" in page
