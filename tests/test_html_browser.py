"""The HTML report in real headless Chromium, driven over the DevTools protocol.

Checks: no console errors or exceptions, every plot element present, the example filter
works, a screenshot that is not blank, and XSS payloads in run names, labels and example
text render as text without executing (with the page's CSP removed, so escaping alone is
what is tested). Needs Debian's ``chromium`` (the Makefile installs it) and
``websocket-client``; skipped with the reason when either is missing.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import struct
import subprocess
import time
import urllib.request
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from report_samples import XSS_PAYLOADS, make_comparison

from aipm_tracking.report.base import ReportOptions
from aipm_tracking.report.html import render_html, render_run_html
from aipm_tracking.schema import MetricValue, ModelInfo, RunRecord

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or (
    "/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None)
websocket = pytest.importorskip(
    "websocket", reason="websocket-client is not installed (pip install websocket-client)")
if CHROMIUM is None:
    pytest.skip("chromium is not installed (the Makefile installs Debian's 'chromium')",
                allow_module_level=True)


class Page:
    """A minimal DevTools-protocol client for one page target."""

    def __init__(self, ws_url: str) -> None:
        self.ws = websocket.create_connection(ws_url, timeout=30, suppress_origin=True)
        self._id = 0
        self.events: list[dict[str, Any]] = []
        for domain in ("Runtime", "Log", "Page"):
            self.call(f"{domain}.enable")

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self._id += 1
        my = self._id
        self.ws.send(json.dumps({"id": my, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == my:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                result: dict[str, Any] = msg.get("result", {})
                return result
            if "method" in msg:
                self.events.append(msg)

    def wait_event(self, name: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not any(e["method"] == name for e in self.events):
            if time.monotonic() > deadline:
                raise TimeoutError(name)
            msg = json.loads(self.ws.recv())
            if "method" in msg:
                self.events.append(msg)

    def open(self, path: Path) -> None:
        self.events.clear()
        self.call("Page.navigate", url=path.resolve().as_uri())
        self.wait_event("Page.loadEventFired")

    def eval(self, expr: str) -> Any:
        res = self.call("Runtime.evaluate", expression=expr, returnByValue=True)
        if "exceptionDetails" in res:
            raise RuntimeError(f"JS error evaluating {expr!r}: {res['exceptionDetails']}")
        return res["result"].get("value")

    def errors(self) -> list[str]:
        """Console errors, uncaught exceptions and error log entries (CSP violations too)."""
        out = []
        for e in self.events:
            p = e.get("params", {})
            if e["method"] == "Runtime.exceptionThrown":
                out.append(str(p.get("exceptionDetails")))
            elif e["method"] == "Runtime.consoleAPICalled" and p.get("type") in ("error",
                                                                                "assert"):
                out.append(str(p.get("args")))
            elif e["method"] == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
                out.append(str(p["entry"].get("text")))
        return out

    def screenshot(self, scale: float = 1.0) -> bytes:
        self.call("Emulation.setDeviceMetricsOverride", width=1280, height=2000,
                  deviceScaleFactor=1, mobile=False)
        clip = {"x": 0, "y": 0, "width": 1280, "height": 2000, "scale": scale}
        data = self.call("Page.captureScreenshot", format="png", clip=clip)["data"]
        return base64.b64decode(data)


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Page]:
    profile = tmp_path_factory.mktemp("chromium-profile")
    assert CHROMIUM is not None
    proc = subprocess.Popen(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--disable-extensions", "--disable-dev-shm-usage",
         "--remote-debugging-port=0", "--remote-allow-origins=*",
         f"--user-data-dir={profile}", "--window-size=1280,2000", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (port_file.exists() and port_file.read_text().strip()):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"chromium did not start (exit {proc.poll()})")
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
            targets = json.load(r)
        ws_url = next(t["webSocketDebuggerUrl"] for t in targets if t.get("type") == "page")
        pg = Page(ws_url)
        yield pg
        pg.ws.close()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def _png_grey(png: bytes) -> tuple[int, list[float]]:
    """(width, grey level per pixel) of an 8-bit RGB/RGBA PNG, with zlib and struct only
    (used when Pillow is not installed)."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width = 8, b"", 0
    height = depth = ctype = 0
    while pos < len(png):
        (length,) = struct.unpack(">I", png[pos:pos + 4])
        kind, data = png[pos + 4:pos + 8], png[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, ctype = struct.unpack(">IIBB", data[:10])
        elif kind == b"IDAT":
            idat += data
        pos += 12 + length
    assert depth == 8 and ctype in (2, 6), (depth, ctype)
    bpp = 3 if ctype == 2 else 4
    raw, stride = zlib.decompress(idat), width * bpp
    prev, grey, i = bytearray(stride), [], 0
    for _ in range(height):
        f, line = raw[i], bytearray(raw[i + 1:i + 1 + stride])
        i += 1 + stride
        for x in range(stride):
            a = line[x - bpp] if x >= bpp else 0
            b, c = prev[x], prev[x - bpp] if x >= bpp else 0
            if f == 1:
                line[x] = (line[x] + a) & 255
            elif f == 2:
                line[x] = (line[x] + b) & 255
            elif f == 3:
                line[x] = (line[x] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[x] = (line[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        grey += [sum(line[x:x + 3]) / 3 for x in range(0, stride, bpp)]
        prev = line
    return width, grey


def _pixel_spread(png: bytes) -> float:
    """Standard deviation of grey levels (0 for a blank image)."""
    try:
        from PIL import Image, ImageStat
    except ImportError:
        width, grey = _png_grey(png)
        mean = sum(grey) / len(grey)
        return (sum((g - mean) ** 2 for g in grey) / len(grey)) ** 0.5
    img = Image.open(io.BytesIO(png)).convert("L")
    return float(ImageStat.Stat(img).stddev[0])


def test_report_renders_without_errors(page: Page, tmp_path: Path) -> None:
    f = tmp_path / "report.html"
    f.write_text(render_html(make_comparison(), ReportOptions()), encoding="utf-8")
    page.open(f)
    assert page.errors() == []
    assert page.eval("document.querySelectorAll('svg.plot').length") == 4
    assert page.eval("document.querySelectorAll('svg.plot polyline.series').length") == 6
    assert page.eval("document.querySelectorAll('svg.plot rect.bar').length") == 2
    assert page.eval("document.querySelectorAll('#guardrails tbody tr').length") == 5
    assert page.eval("document.querySelectorAll('#slice-guardrails tbody tr').length") == 2
    assert page.eval("document.querySelectorAll('table.confusion tbody tr').length") == 4
    assert page.eval("document.getElementById('verdict').innerText").startswith("FAIL")
    # plots actually laid out (non-zero size)
    assert page.eval("document.getElementById('plot-latency').getBoundingClientRect().width") > 200
    # the inline filter works (the CSP lets our script run)
    page.eval("var b=document.getElementById('filter');b.value='invoice #19';"
              "b.dispatchEvent(new Event('input'))")
    shown = page.eval("Array.from(document.querySelectorAll('#changed tbody tr'))"
                      ".filter(r=>!r.hidden).length")
    assert shown == 11  # #19 and #190..#199
    assert "11 shown" in page.eval("document.getElementById('filter-count').textContent")
    assert page.errors() == []
    png = page.screenshot()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", png[16:24]) == (1280, 2000)
    assert _pixel_spread(png) > 10
    small = page.screenshot(scale=0.25)  # the stdlib decoder agrees with Pillow's reading
    width, grey = _png_grey(small)
    assert width == 320 and max(grey) - min(grey) > 100
    try:
        from PIL import Image
    except ImportError:
        return
    img = Image.open(io.BytesIO(small)).convert("RGB")
    raw = img.tobytes()
    pil_grey = [sum(raw[i:i + 3]) / 3 for i in range(0, len(raw), 3)]
    assert grey == pytest.approx(pil_grey)


def test_single_run_report_renders(page: Page, tmp_path: Path) -> None:
    cmp = make_comparison()
    rec = RunRecord(run_id="r1", name="bot-3", model=ModelInfo("bot", "3"),
                    metrics={"accuracy": MetricValue(0.9), "cost_per_query_usd": MetricValue(0.0015)},
                    details=cmp.details["candidate_details"])
    f = tmp_path / "run.html"
    f.write_text(render_run_html(rec), encoding="utf-8")
    page.open(f)
    assert page.errors() == []
    assert page.eval("document.querySelectorAll('svg.plot').length") == 4


@pytest.mark.parametrize("payload", XSS_PAYLOADS)
def test_xss_payloads_do_not_execute(page: Page, tmp_path: Path, payload: str) -> None:
    doc = render_html(make_comparison(payload=payload), ReportOptions())
    # drop the CSP so that escaping alone is under test
    doc, n = re.subn(r'<meta http-equiv="Content-Security-Policy"[^>]*>', "", doc)
    assert n == 1
    f = tmp_path / "xss.html"
    f.write_text(doc, encoding="utf-8")
    page.open(f)
    time.sleep(0.2)  # let any onerror/onload handler fire if one had been injected
    assert page.eval("typeof window.__xss") == "undefined"
    assert page.eval("document.querySelectorAll('main img, main script').length") == 0
    assert page.eval("document.querySelectorAll('svg:not(.plot)').length") == 0
    # the payload is shown as text: in run names, example text, labels and plot legends
    body = page.eval("document.body.innerText")
    assert f"prod{payload}" in body and f"My invoice #0 is wrong{payload}" in body
    legend = page.eval("document.querySelector('#plot-reliability g.legend').textContent")
    assert payload[:10] in legend
    assert page.errors() == []


def test_long_trend_axis_labels_do_not_overlap_or_clip(page: Page, tmp_path: Path) -> None:
    """200 versions and a 4.9e11 outlier: in a real layout engine, the x labels of each plot
    do not overlap, and every y label lies inside the plot's box (nothing clipped)."""
    from aipm_tracking.report.trend import Trend, TrendMetric, render_trend_html

    versions = [f"v{i}" for i in range(1, 201)]
    lat: list[float | None] = [400.0 + i for i in range(200)]
    lat[100] = 4.9e11
    acc: list[float | None] = [0.6 + i / 1000 for i in range(200)]
    t = Trend("big", versions, versions, [
        TrendMetric("accuracy", "higher", acc, [("min", 0.8)], "min 0.8"),
        TrendMetric("latency_ms_p95", "lower", lat, [("max", 800.0)], "max 800")])
    f = tmp_path / "trend.html"
    f.write_text(render_trend_html(t), encoding="utf-8")
    page.open(f)
    assert page.errors() == []
    boxes = page.eval("""Array.from(document.querySelectorAll('svg.plot')).map(svg => {
        const b = (sel) => Array.from(svg.querySelectorAll(sel)).map(e => {
            const r = e.getBBox(); return [r.x, r.width, e.textContent]; });
        return {x: b('text.tick[text-anchor=middle]'), y: b('text.tick[text-anchor=end]')};
    })""")
    assert len(boxes) == 2
    for plot in boxes:
        xs = sorted(plot["x"])
        assert 2 <= len(xs) <= 12 and xs[0][2] == "v1" and xs[-1][2] == "v200"
        for (x0, w0, _), (x1, _, _) in zip(xs, xs[1:], strict=False):
            assert x0 + w0 < x1, xs  # no overlap
        assert plot["y"] and all(x >= 0 for x, _, _ in plot["y"]), plot["y"]  # not clipped
    banner = page.eval("document.getElementById('verdict').getBoundingClientRect().height")
    assert banner < 150  # the 200 versions are not all listed
