"""End to end in a real browser: JupyterLab + headless Debian Chromium (driven by Playwright)
opens ``tests/browser/explorers.ipynb``, runs all cells, moves the PairExplorer's slice slider
with the keyboard, and checks that the kernel saw the new value and that the image changed.

Needs ``/usr/bin/chromium`` (``apt-get install chromium``) and the ``playwright`` package
(``pip install playwright``; never ``playwright install``); skipped with a reason otherwise.
Screenshots go to ``$REINDIR_ARTEFACTS/browser`` (default: the test's tmp folder).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"]
NOTEBOOK = Path(__file__).parent / "browser" / "explorers.ipynb"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(predicate, timeout: float, what: str, interval: float = 0.25):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def _server_up(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


@pytest.fixture()
def lab(tmp_path):
    """A JupyterLab server on 127.0.0.1 (token off, isolated config/runtime/workspace dirs) whose
    root holds a copy of the browser notebook. Yields (port, root)."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"Debian chromium not installed at {CHROMIUM} (apt-get install chromium)")
    pytest.importorskip("playwright.sync_api", reason="playwright not installed (pip install playwright)")
    root = tmp_path / "root"
    root.mkdir()
    shutil.copy(NOTEBOOK, root / NOTEBOOK.name)
    env = dict(os.environ)
    for var, sub in (("JUPYTER_CONFIG_DIR", "config"), ("JUPYTER_RUNTIME_DIR", "runtime"),
                     ("JUPYTERLAB_WORKSPACES_DIR", "workspaces"), ("JUPYTERLAB_SETTINGS_DIR", "settings"),
                     ("IPYTHONDIR", "ipython")):
        env[var] = str(tmp_path / "jupyter" / sub)
    port = _free_port()
    cmd = [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ip", "127.0.0.1", f"--port={port}",
           "--ServerApp.token=", "--ServerApp.password=", f"--ServerApp.root_dir={root}",
           "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")
    log = open(tmp_path / "jupyterlab.log", "w")
    proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait(lambda: _server_up(port) or proc.poll() is not None, 60, "JupyterLab to start")
        if proc.poll() is not None:
            pytest.fail(f"JupyterLab exited ({proc.returncode}): {(tmp_path / 'jupyterlab.log').read_text()[-2000:]}")
        yield port, root
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def _busy(page) -> bool:
    return page.locator(".jp-Notebook-ExecutionIndicator").first.get_attribute("data-status") == "busy"


def _difference(a: Path, b: Path) -> float:
    """Mean absolute pixel difference (0-255) of two screenshots (same size expected)."""
    from PIL import Image

    x = np.asarray(Image.open(a).convert("L"), dtype=float)
    y = np.asarray(Image.open(b).convert("L"), dtype=float)
    if x.shape != y.shape:
        return float("inf")
    return float(np.abs(x - y).mean())


def test_slider_moves_in_jupyterlab_reach_the_kernel_and_redraw(lab, tmp_path):
    from playwright.sync_api import sync_playwright

    port, root = lab
    art = Path(os.environ.get("REINDIR_ARTEFACTS", tmp_path)) / "browser"
    art.mkdir(parents=True, exist_ok=True)
    state_file, ready = root / "kernel_state.json", root / "ready.txt"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        try:
            page.goto(f"http://127.0.0.1:{port}/lab/tree/{NOTEBOOK.name}?reset", timeout=60_000)
            page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=90_000)
            # requests sent while the kernel connection is still settling can stay queued ([*]) for
            # ever: wait a moment, and run all again if the kernel never started on them
            for attempt in range(2):
                page.wait_for_timeout(2000)
                page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
                page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
                try:
                    _wait(lambda: state_file.exists() or _busy(page), 30, "the kernel to start running the cells")
                    break
                except AssertionError:
                    if attempt:
                        raise
            _wait(ready.exists, float(os.environ.get("REINDIR_BROWSER_TIMEOUT", 240)), "the notebook's cells to run (ready.txt)")

            image = page.locator(".rn-pair-explorer img").first
            image.wait_for(state="visible", timeout=30_000)
            handle = page.locator(".rn-pair-explorer .widget-slider .noUi-handle").first
            handle.wait_for(state="visible", timeout=30_000)
            first = _wait(lambda: _read_json(state_file), 30, "the kernel's first state record")
            page.wait_for_timeout(500)  # let the first PNG paint
            before = art / "pair_explorer_before.png"
            image.screenshot(path=str(before))

            handle.focus()
            page.keyboard.press("ArrowRight")
            seen = _wait(lambda: (s := _read_json(state_file)) and s["slice"] != first["slice"] and s,
                         30, "the kernel to see the slider move")
            assert seen["slice"] == first["slice"] + 1  # one keyboard step
            assert seen["state_index"] == seen["slice"] and seen["scrubber_index"] == seen["slice"]  # linked
            assert seen["renders"] > first["renders"] and seen["png_sha1"] != first["png_sha1"]

            after = art / "pair_explorer_after.png"

            def redrawn() -> bool:
                image.screenshot(path=str(after))
                return _difference(before, after) > 0.5

            _wait(redrawn, 20, "the page's image to change")
            page.screenshot(path=str(art / "jupyterlab_page.png"), full_page=True)
            for css, name in ((".rn-iteration-scrubber", "iteration_scrubber"), (".rn-landmark-explorer", "landmark_explorer")):
                view = page.locator(css).first
                view.scroll_into_view_if_needed()
                page.wait_for_timeout(1500)  # the 3D scatter draws asynchronously
                view.screenshot(path=str(art / f"{name}.png"))
            label = page.locator(".rn-pair-explorer .widget-slider .widget-readout").first.inner_text()
            assert label.strip() == str(seen["slice"])  # the page shows the new slice number
        except BaseException:
            page.screenshot(path=str(art / "failure.png"), full_page=True)
            print(f"failure screenshot: {art / 'failure.png'}")
            raise
        finally:
            browser.close()
    print(f"browser screenshots: {art}")
