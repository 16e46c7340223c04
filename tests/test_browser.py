"""Real browser: JupyterLab serves notebook 04 to headless Chromium; moving a slider redraws the image.

Needs Debian's chromium at /usr/bin/chromium (`apt-get install -y chromium`) and playwright (pip).
Skips when chromium is absent, except on CI (env CI=true), where it fails with the install command.
"""
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from test_explore_helpers import make_G

CHROMIUM = "/usr/bin/chromium"
NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "04_interpolation_widgets.ipynb"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]


def _need_chromium():
    if os.path.exists(CHROMIUM):
        return
    msg = f"{CHROMIUM} not found: install it with `apt-get update && apt-get install -y chromium` (as root)"
    if os.environ.get("CI") == "true":
        pytest.fail(msg)
    pytest.skip(msg)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def lab(tmp_path):
    """A JupyterLab server on a free port with a token, serving a copy of notebook 04 from tmp_path."""
    from sg3lib.checkpoint import save_snapshot, snapshot_from_networks
    _need_chromium()
    pytest.importorskip("playwright")
    net = save_snapshot(tmp_path / "network.pt", snapshot_from_networks({"G_ema": make_G()}))
    shutil.copy(NOTEBOOK, tmp_path / NOTEBOOK.name)
    settings = tmp_path / "lab-settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false",
                                                                           "checkForUpdates": False}))
    port, token = _free_port(), "sg3lib-browser-test"
    env = dict(os.environ, SG3_NETWORK=str(net), SG3_OUT=str(tmp_path / "out"), SG3_QUICK="1",
               OMP_NUM_THREADS="1", JUPYTERLAB_SETTINGS_DIR=str(tmp_path / "lab-settings"),
               JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"), JUPYTER_CONFIG_DIR=str(tmp_path / "config"))
    log = open(tmp_path / "lab.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}", "--ip=127.0.0.1",
                             f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={tmp_path}",
                             "--ServerApp.port_retries=0", "--allow-root", "--ServerApp.terminals_enabled=False",
                             "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
                             "--LabApp.extension_manager=readonly"],
                            env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=5)
                break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    pytest.fail(f"jupyter lab did not start:\n{(tmp_path / 'lab.log').read_text()[-3000:]}")
                time.sleep(0.5)
        yield url, token
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.mark.slow
def test_slider_in_jupyterlab_changes_the_image(lab, tmp_path):
    from playwright.sync_api import sync_playwright
    url, token = lab
    t0 = time.time()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(180_000)
        try:
            page.goto(f"{url}/lab/tree/{NOTEBOOK.name}?token={token}")
            page.wait_for_selector(".jp-Notebook .jp-Cell")
            try:  # JupyterLab may ask which kernel to start: take the proposed one (python3)
                page.locator(".jp-Dialog button", has_text="Select").click(timeout=15_000)
            except Exception:
                pass
            page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']")
            page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
            page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
            # the explorer's image appears with its caption, then every cell finishes
            caption = page.locator(".widget-html", has_text="seed 0 |").first
            caption.wait_for()
            page.wait_for_function("""() => {
                const prompts = [...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')];
                return prompts.length > 0 && prompts.every(p => /\\[\\d+\\]/.test(p.textContent));
            }""")
            image = page.locator("img.widget-image").first
            image.scroll_into_view_if_needed()
            before = image.screenshot()
            handle = page.locator(".widget-slider .noUi-handle").first  # the seed slider
            handle.focus()
            page.keyboard.press("ArrowRight")
            page.locator(".widget-html", has_text="seed 1 |").first.wait_for()
            page.wait_for_timeout(500)  # let the new PNG paint
            after = image.screenshot()
            (tmp_path / "before.png").write_bytes(before)
            (tmp_path / "after.png").write_bytes(after)
        except Exception:
            page.screenshot(path=str(tmp_path / "failure.png"))
            raise
        finally:
            browser.close()
    assert before != after, f"the image did not change; screenshots in {tmp_path}"
    print(f"browser test: {time.time() - t0:.1f} s in the browser")
