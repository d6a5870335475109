"""A headless-browser check of a local HTML page through the Chrome DevTools Protocol over a pipe.

Debian's `chromium` is started with --remote-debugging-pipe (commands on fd 3, events on fd 4, JSON
messages ending in NUL), no extension of our own and no Python package beyond the standard library.
It opens the page from a file and reports what a reader's browser would: every request it started
(Network.requestWillBeSent), console messages and uncaught exceptions, log entries (CSP violations,
failed loads), and, after the load event, how many <img> elements decoded to a real image. Name
resolution is mapped to nothing and a dead proxy is set, so a request that tries to leave the machine
fails on the spot instead of reaching anything; it is still reported.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

PAGE_PROBE = """JSON.stringify({
  images: document.images.length,
  broken: [...document.images].filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.alt || i.src.slice(0, 60)),
  title: document.title,
  headings: [...document.querySelectorAll('h2')].map(h => h.textContent),
  tables: document.querySelectorAll('table').length,
  width: document.documentElement.scrollWidth, height: document.documentElement.scrollHeight,
  viewport: [innerWidth, innerHeight],
  glance: (el => el ? {top: el.getBoundingClientRect().top, text: el.textContent.slice(0, 4000)} : null)(
    document.querySelector('section.glance')),
  overflowing: [...document.querySelectorAll('table')].filter(t => t.getBoundingClientRect().right > innerWidth + 1)
    .map(t => (t.caption ? t.caption.textContent : '?')),
  alts: [...document.images].map(i => i.alt),
  nav: [...document.querySelectorAll('nav a')].map(a => a.textContent),
  headers_without_scope: document.querySelectorAll('th:not([scope])').length,
  tables_without_caption: [...document.querySelectorAll('table')].filter(t => !t.caption).length})"""


def chromium_binary() -> str | None:
    """CXR_CHROMIUM (a binary's path or name) when set - None if it is not executable - else the first of
    chromium, chromium-browser, google-chrome on PATH."""
    configured = os.environ.get("CXR_CHROMIUM")
    if configured:
        return shutil.which(configured)
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


@dataclass
class PageCheck:
    page: dict = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)
    console: list[str] = field(default_factory=list)      # console messages of level error / warning
    exceptions: list[str] = field(default_factory=list)
    log_errors: list[str] = field(default_factory=list)
    screenshot: bytes | None = None

    def outside_requests(self) -> list[str]:
        return [url for url in self.requests if not url.startswith(("file:", "data:", "about:"))]


class _Pipe:
    def __init__(self, binary: str, profile: str):
        cmd_read, self._cmd_write = os.pipe()
        self._evt_read, evt_write = os.pipe()
        flags = ["--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--no-default-browser-check",
                 "--disable-extensions", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--metrics-recording-only", "--host-resolver-rules=MAP * ~NOTFOUND",
                 "--proxy-server=127.0.0.1:9", "--remote-debugging-pipe", f"--user-data-dir={profile}",
                 "--window-size=1280,900", "about:blank"]
        # bash, not sh: dash's redirections take single-digit descriptors only
        extra = " ".join(f"{fd}<&-" for fd in (cmd_read, evt_write) if fd not in (3, 4))
        script = f'exec 3<&{cmd_read} 4>&{evt_write} {extra}; exec "$0" "$@"'
        self.proc = subprocess.Popen(["bash", "-c", script, binary, *flags], pass_fds=(cmd_read, evt_write),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        os.close(cmd_read)
        os.close(evt_write)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict] = []

    def send(self, method: str, params: dict | None = None, session: str | None = None, timeout: float = 120) -> dict:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._cmd_write, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for reply in self._read():
                if reply.get("id") == self._next_id:
                    if "error" in reply:
                        raise RuntimeError(f"{method}: {reply['error']}")
                    return reply.get("result", {})
                self.events.append(reply)
        raise TimeoutError(f"no reply to {method} within {timeout} s")

    def wait_for(self, method: str, timeout: float = 120) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for event in [e for e in self.events if e.get("method") == method]:
                return event
            self.events.extend(self._read())
        raise TimeoutError(f"no {method} within {timeout} s")

    def _read(self) -> list[dict]:
        import select

        ready, _, _ = select.select([self._evt_read], [], [], 0.2)
        if not ready:
            if self.proc.poll() is not None:
                raise RuntimeError(f"chromium exited: {self.proc.stderr.read().decode(errors='replace')[-2000:]}")
            return []
        chunk = os.read(self._evt_read, 1 << 20)
        if not chunk:
            raise RuntimeError("chromium closed its DevTools pipe")
        self._buffer += chunk
        *messages, self._buffer = self._buffer.split(b"\0")
        return [json.loads(m) for m in messages if m]

    def close(self) -> None:
        try:
            os.write(self._cmd_write, json.dumps({"id": 0, "method": "Browser.close"}).encode() + b"\0")
            self.proc.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()
        finally:
            os.close(self._cmd_write)
            os.close(self._evt_read)


def check_page(path: Path, screenshot: bool = False, settle_s: float = 0.5,
               viewport: tuple[int, int] = (1280, 800)) -> PageCheck:
    """Open `path` in headless chromium at `viewport` (width, height in CSS px) and report what happened (see
    the module doc); `screenshot`: also capture the first screen (PNG bytes in .screenshot)."""
    binary = chromium_binary()
    if binary is None:
        raise FileNotFoundError("chromium is not installed (Debian: apt-get install chromium)")
    result = PageCheck()
    with tempfile.TemporaryDirectory(prefix="cxr-chromium-") as profile:
        pipe = _Pipe(binary, profile)
        try:
            target = pipe.send("Target.createTarget", {"url": "about:blank"})["targetId"]
            session = pipe.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
            for domain in ("Page", "Runtime", "Log", "Network"):
                pipe.send(f"{domain}.enable", session=session)
            pipe.send("Emulation.setDeviceMetricsOverride", {"width": viewport[0], "height": viewport[1],
                                                             "deviceScaleFactor": 1, "mobile": False}, session=session)
            pipe.events.clear()
            pipe.send("Page.navigate", {"url": Path(path).resolve().as_uri()}, session=session)
            pipe.wait_for("Page.loadEventFired", timeout=120)
            time.sleep(settle_s)
            pipe.events.extend(pipe._read())
            probe = pipe.send("Runtime.evaluate", {"expression": PAGE_PROBE, "returnByValue": True}, session=session)
            result.page = json.loads(probe["result"]["value"])
            if screenshot:
                import base64

                shot = pipe.send("Page.captureScreenshot", {"format": "png"}, session=session, timeout=60)
                result.screenshot = base64.b64decode(shot["data"])
            pipe.events.extend(pipe._read())
        finally:
            pipe.close()
    for event in pipe.events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Network.requestWillBeSent":
            result.requests.append(params["request"]["url"])
        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "warning", "assert"):
            result.console.append(" ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", [])))
        elif method == "Runtime.exceptionThrown":
            result.exceptions.append(params.get("exceptionDetails", {}).get("text", "exception"))
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") in ("error", "warning"):
            result.log_errors.append(params["entry"].get("text", ""))
    return result
