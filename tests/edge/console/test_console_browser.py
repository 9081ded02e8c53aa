"""The console in a real browser: Debian's chromium (headless, via chromedriver and selenium) watching
``emostream run`` analyse the Pexels clip at its native rate. Also the CLI's one-line errors for bad
``--console``/``--alert``/``--events`` flags. Screenshots land in ``out/console/`` (git-ignored)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
OUT = REPO / "out" / "console"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
TOKEN = "browser-test-token-42"


def _browser(tmp_path: Path):
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        pytest.skip("chromium/chromium-driver not installed (apt-get install chromium chromium-driver; "
                    "`make test` installs them)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium not installed (the dev extra)")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                "--window-size=1500,1000", f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        opts.add_argument(arg)
    # An explicit chromedriver path: Selenium Manager never runs, nothing is downloaded.
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)


class _Run:
    """``emostream run`` in a child process; stderr drained on a thread (progress lines must not block it)."""

    def __init__(self, *args: str) -> None:
        env = {**os.environ, "GLOG_minloglevel": "2"}
        self.proc = subprocess.Popen([sys.executable, "-m", "emostream", "run", *args], cwd=REPO, env=env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self.url: str | None = None
        self._ready = threading.Event()
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))
            if line.startswith("emostream: console at "):
                self.url = line.split()[3]
                self._ready.set()
        self._ready.set()

    def wait_url(self, timeout: float = 90) -> str:
        assert self._ready.wait(timeout) and self.url, "\n".join(self.lines[-20:])
        return self.url

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(30)


def test_console_in_chromium_shows_the_stream_and_its_track(tmp_path, data_file):
    clip = data_file("video/WolfgangLanger_Pexels.mp4")
    OUT.mkdir(parents=True, exist_ok=True)
    run = _Run(str(clip), "--stream-id", "pexels", "--realtime", "--console", "127.0.0.1:0", "--console-token",
               TOKEN, "--console-linger", "-1", "--alert", "sad>=0.3 for 1s", "--output", str(tmp_path / "r.jsonl"))
    driver = None
    try:
        url = run.wait_url()
        # Without the token: 401 for the page and for the live channel.
        for path in ("", "api/live", "api/state"):
            with pytest.raises(urllib.error.HTTPError) as err:
                urllib.request.urlopen(url + path, timeout=5)
            assert err.value.code == 401
        driver = _browser(tmp_path)
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support.ui import WebDriverWait

        driver.get(f"{url}?token={TOKEN}")
        wait = WebDriverWait(driver, 60, poll_frequency=0.2)

        def js(expr: str):
            # The page re-renders track rows on every update, so read through JavaScript (no stale elements).
            return driver.execute_script(f"return {expr}")

        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, '.tile[data-stream="pexels"]'))
        label = wait.until(lambda d: js("document.querySelector('.tile .track .label')?.textContent"))
        assert label in ("neutral", "happy", "sad", "surprise", "fear", "disgust", "anger")
        assert js("document.querySelector('.tile .track .id').textContent") == "#1"
        # the frame image arrives and keeps changing (5 fps at most, pulled when loaded)
        wait.until(lambda d: js("(() => {const i=document.querySelector('.tile img');"
                                "return i && !i.hidden && i.naturalWidth > 0})()"))
        first = js("document.querySelector('.tile img').src")
        wait.until(lambda d: js("document.querySelector('.tile img').src") != first)
        # the alert rule is shown, and the sad opening of the clip raises it in the event log
        assert "sad>=0.3 for 1s" in js("document.getElementById('rules').textContent")
        wait.until(lambda d: "ALERT raised" in js("document.getElementById('events').textContent"))
        # the reasoner's answer is shown for the track, and the tile has its numbers
        wait.until(lambda d: js("document.querySelector('.track .reason') !== null"))
        assert "fps" in js("document.querySelector('.tile .stats').textContent")
        time.sleep(1.0)
        driver.save_screenshot(str(OUT / "console.png"))
        assert (OUT / "console.png").stat().st_size > 10_000
        state = json.loads(urllib.request.urlopen(urllib.request.Request(
            url + "api/state", headers={"Authorization": f"Bearer {TOKEN}"}), timeout=5).read())
        assert state["streams"][0]["frames"] > 0 and state["streams"][0]["tracks"][0]["spark"]
    finally:
        if driver is not None:
            driver.quit()
        code = run.stop()
    assert code == 143, "\n".join(run.lines[-20:])  # SIGTERM: the orderly stop's exit code
    kinds = [json.loads(line).get("kind") for line in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert "alert" in kinds and "track_end" in kinds


@pytest.mark.parametrize("flags, message", [
    (["--console", "0.0.0.0:8080"], "reachable from the network"),
    (["--console", "8080", "--console-token", "short"], "at least"),
    (["--console", "nope"], "expected HOST:PORT"),
    (["--console-linger", "5"], "need --console"),
    (["--alert", "anger>>0.6"], "cannot parse --alert"),
    (["--alert", "rage>=0.6"], "unknown metric"),
    (["--alert", "anger>=0.6 for 5"], "unit"),
    (["--events", "http://broker/x"], "expected mqtt://"),
    (["--events", "mqtt://broker/a/#"], "may not hold"),
    (["--events-frames"], "needs --events"),
])
def test_bad_flags_are_one_line_and_exit_2_before_anything_opens(emostream, tmp_path, flags, message):
    out = tmp_path / "untouched.jsonl"
    proc = emostream("run", "/nonexistent/clip.mp4", "--output", str(out), *flags, timeout=60)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("emostream: error:") and message in lines[0], proc.stderr
    assert not out.exists()


def test_a_stalled_client_drops_updates_not_frames(tmp_path, data_file):
    """A client that opens the live channel and never reads (its TCP window fills) and one that pulls frames in
    a tight loop: the run still analyses and writes every frame of the clip, and exits 0."""
    import socket

    clip = data_file("video/WolfgangLanger_Pexels.mp4")
    out = tmp_path / "r.jsonl"
    run = _Run(str(clip), "--reasoner", "none", "--console", "127.0.0.1:0", "--output", str(out))
    url = run.wait_url()
    host, port = url.split("//")[1].rstrip("/").rsplit(":", 1)
    stalled = socket.create_connection((host, int(port)))
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.sendall(f"GET /api/live HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    pulled = 0
    while run.proc.poll() is None:
        try:
            with urllib.request.urlopen(url + "api/frame/0.jpg", timeout=5) as resp:
                pulled += bool(resp.read())
        except OSError:
            break
    assert run.proc.wait(120) == 0, "\n".join(run.lines[-20:])
    stalled.close()
    frames = [line for line in out.read_text().splitlines() if line.startswith('{"type":"frame"')]
    assert len(frames) == 472  # the whole clip: nothing was dropped for the console
    assert pulled >= 1


def test_console_port_in_use_is_one_line_and_leaves_the_output_alone(emostream, tmp_path, data_file):
    import socket

    clip = data_file("video/WolfgangLanger_Pexels.mp4")
    out = tmp_path / "r.jsonl"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        proc = emostream("run", str(clip), "--console", f"127.0.0.1:{port}", "--max-frames", "5", "-q",
                         "--output", str(out), timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"emostream: error: cannot serve the console on 127.0.0.1:{port}: Address already in use"]
    assert not out.exists()
