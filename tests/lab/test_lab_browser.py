"""The lab report in a real browser: a smoke report opens in headless Chromium with every
image loaded and no console error, and a screenshot is saved for a person to look at.

Chromium is driven through the DevTools protocol over a pipe (``--remote-debugging-pipe``:
file descriptors 3 and 4, no network port). The checker is first shown a page with a
broken image and a console error, so a silent checker cannot pass the real page.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import select
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from cnnkit.lab.report import render_report
from cnnkit.lab.runner import run_experiments

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="needs Debian's chromium (apt-get install -y chromium)"
)


class Browser:
    """Headless Chromium with the DevTools protocol on fds 3 (commands in) and 4 (replies out)."""

    def __init__(self, profile: Path) -> None:
        to_r, self._to_w = os.pipe()
        self._from_r, from_w = os.pipe()
        # Chromium's ends above fd 4, so that moving them to 3 and 4 cannot overwrite one another
        high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (to_r, from_w)]
        os.close(to_r)
        os.close(from_w)
        to_r, from_w = high

        assert CHROMIUM is not None
        flags = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--no-first-run",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            f"--user-data-dir={profile}",
            "--remote-debugging-pipe",
            "about:blank",
        ]
        # bash moves the pipe ends to fds 3 and 4, where Chromium expects them (no preexec_fn:
        # forking a process that runs torch's thread pool must not run Python in the child)
        redirect = f'exec "$0" "$@" 3<&{to_r} 4>&{from_w} {to_r}<&- {from_w}>&-'
        self.proc = subprocess.Popen(
            ["/bin/bash", "-c", redirect, CHROMIUM, *flags],  # bash: dash takes single-digit fds only
            pass_fds=(to_r, from_w),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(to_r)
        os.close(from_w)
        self._buf = b""
        self._id = 0
        self.events: list[dict[str, Any]] = []

    def _recv(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buf:
            ready, _, _ = select.select([self._from_r], [], [], max(deadline - time.monotonic(), 0))
            if not ready:
                raise TimeoutError("Chromium did not answer in time")
            chunk = os.read(self._from_r, 1 << 20)
            if not chunk:
                raise EOFError("Chromium closed the DevTools pipe")
            self._buf += chunk
        msg, self._buf = self._buf.split(b"\0", 1)
        data: dict[str, Any] = json.loads(msg)
        return data

    def call(
        self, method: str, params: dict[str, Any] | None = None, session: str | None = None
    ) -> dict[str, Any]:
        self._id += 1
        msg: dict[str, Any] = {"id": self._id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._to_w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + 30
        while True:
            reply = self._recv(deadline)
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                result: dict[str, Any] = reply["result"]
                return result
            self.events.append(reply)

    def open(self, url: str) -> str:
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self.call(f"{domain}.enable", session=session)
        self.call(
            "Emulation.setDeviceMetricsOverride",
            {"width": 1200, "height": 900, "deviceScaleFactor": 1, "mobile": False},
            session,
        )
        self.events.clear()
        self.call("Page.navigate", {"url": url}, session=session)
        deadline = time.monotonic() + 30
        while not any(e.get("method") == "Page.loadEventFired" for e in self.events):
            self.events.append(self._recv(deadline))
        return session

    def close(self) -> None:
        with contextlib.suppress(OSError, EOFError, TimeoutError, RuntimeError):
            self.call("Browser.close")
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._to_w)
        os.close(self._from_r)


def inspect(browser: Browser, page: Path, screenshot: Path | None = None) -> dict[str, Any]:
    """Load ``page``; return its images (src, complete, natural size), console errors and title."""
    session = browser.open(page.resolve().as_uri())
    images = json.loads(
        browser.call(
            "Runtime.evaluate",
            {
                "expression": "JSON.stringify(Array.from(document.images).map(i => "
                "({src: i.getAttribute('src'), complete: i.complete, width: i.naturalWidth, height: i.naturalHeight})))",
                "returnByValue": True,
            },
            session,
        )["result"]["value"]
    )
    title = browser.call("Runtime.evaluate", {"expression": "document.title", "returnByValue": True}, session)
    time.sleep(0.2)  # let late console messages arrive
    browser.call("Runtime.evaluate", {"expression": "1"}, session)
    errors = []
    for e in browser.events:
        p = e.get("params", {})
        if e.get("method") == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            errors.append(" ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", [])))
        elif e.get("method") == "Runtime.exceptionThrown":
            errors.append(p["exceptionDetails"].get("text", "exception"))
        elif e.get("method") == "Log.entryAdded" and p["entry"]["level"] == "error":
            errors.append(f"{p['entry']['text']} {p['entry'].get('url', '')}")
    if screenshot is not None:
        shot = browser.call(
            "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True}, session
        )
        screenshot.write_bytes(base64.b64decode(shot["data"]))
    return {"images": images, "errors": errors, "title": title["result"]["value"]}


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Any:
    b = Browser(tmp_path_factory.mktemp("chromium-profile"))
    yield b
    b.close()


def test_the_checker_sees_a_broken_image_and_a_console_error(browser: Browser, tmp_path: Path) -> None:
    page = tmp_path / "bad.html"
    page.write_text('<html><body><img src="missing.png"><script>console.error("boom")</script></body></html>')
    seen = inspect(browser, page)
    assert seen["images"] == [{"src": "missing.png", "complete": True, "width": 0, "height": 0}]
    assert any("boom" in e for e in seen["errors"])
    assert any("ERR_FILE_NOT_FOUND" in e for e in seen["errors"])


@pytest.mark.slow
def test_smoke_report_renders_with_every_image_and_no_console_error(browser: Browser, tmp_path: Path) -> None:
    out = tmp_path / "lab"
    results = run_experiments(["dilation", "separable"], "smoke", output=out, device="cpu", threads=1)
    page = render_report(out)
    shot = Path(os.environ.get("CNNKIT_SCREENSHOT_DIR", tmp_path)) / "lab-report.png"
    seen = inspect(browser, page, screenshot=shot)
    assert seen["errors"] == []
    expected = [f["file"] for r in results for f in r["figures"]]
    assert sorted(i["src"] for i in seen["images"]) == sorted(expected)
    broken = [i["src"] for i in seen["images"] if not (i["complete"] and i["width"] > 0 and i["height"] > 0)]
    assert broken == []
    assert "cnnkit lab" in seen["title"]
    assert shot.read_bytes()[:4] == b"\x89PNG"
