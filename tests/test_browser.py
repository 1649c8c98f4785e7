"""A real browser against a real server: upload through the page, read the result, see the charts.

Uses Debian's Chromium (`apt-get install chromium`; `make test` installs it as root), never
Playwright's own browser download. Screenshots are saved under test-artifacts/.
"""

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import ROOT
from tests.synthetic import lesion_image

# Debian's binary (its /usr/bin/chromium is a wrapper script), else whatever Chromium is on PATH.
CHROMIUM = next(
    (
        path
        for path in ("/usr/lib/chromium/chromium", shutil.which("chromium"), shutil.which("chromium-browser"))
        if path and Path(path).exists()
    ),
    "",
)
ARTIFACTS = ROOT / "test-artifacts"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(trained_models):
    _, output_dir = trained_models
    port = free_port()
    env = {**os.environ, "MELANOMA_MODELS_DIR": str(output_dir)}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamlit",
            "run",
            "app.py",
            "--server.address",
            "127.0.0.1",
            "--server.port",
            str(port),
            "--server.headless",
            "true",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.5)
    yield f"http://127.0.0.1:{port}"
    process.terminate()
    process.wait(timeout=30)


@pytest.mark.skipif(not CHROMIUM, reason="no Chromium found (make test installs Debian's chromium as root)")
def test_upload_read_probability_and_open_compare(server, tmp_path):
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    image = tmp_path / "lesion.jpg"
    lesion_image(True, np.random.default_rng(7)).save(image, quality=95)  # as the fixture: the gate must pass it
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1400, "height": 1600})
        requested: list[str] = []
        page.on("request", lambda request: requested.append(request.url))
        page.goto(server, timeout=120_000)
        page.locator("input[type=file]").set_input_files(str(image))
        probability = page.get_by_text("melanoma probability").first
        probability.wait_for(timeout=180_000)
        page.get_by_text("Occlusion sensitivity overlay").first.wait_for(timeout=180_000)
        value = page.locator('[data-testid="stMetricValue"]').first.inner_text()
        assert value.endswith("%") and 0.0 <= float(value.rstrip("%")) <= 100.0
        page.screenshot(path=str(ARTIFACTS / "diagnose.png"), full_page=True)
        page.get_by_role("link", name="Compare models").click()
        page.locator(".js-plotly-plot").first.wait_for(timeout=120_000)
        page.wait_for_timeout(2000)
        assert page.locator(".js-plotly-plot").count() >= 6
        page.screenshot(path=str(ARTIFACTS / "compare.png"), full_page=True)
        browser.close()
    # Patient data: the page fetched nothing from anywhere but this server (no fonts, scripts, images, telemetry).
    outside = [url for url in requested if not url.startswith((server, "data:", "blob:"))]
    assert requested and not outside, f"requests leaving the server: {outside[:5]}"


@pytest.mark.skipif(not CHROMIUM, reason="no Chromium found (make test installs Debian's chromium as root)")
def test_a_bookmarked_page_opens_within_the_apps_navigation(server):
    """A fresh server whose first request is a page's own address still runs app.py's navigation."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page()
        page.goto(f"{server}/validate", timeout=120_000)
        page.get_by_role("heading", name="Validate on your images").wait_for(timeout=120_000)
        navigation = page.locator('[data-testid="stSidebarNav"]')
        navigation.get_by_text("Model cards").wait_for(timeout=60_000)
        titles = navigation.inner_text()
        browser.close()
    assert "Compare models" in titles and "Diagnose" in titles
    assert "app" not in titles.split()  # the entry file listed as a page of its own: Streamlit's folder mode
