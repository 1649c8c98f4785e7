"""Sign-in in a real browser: the app on 127.0.0.1 with oidc-provider-mock as the clinic's identity provider.

Signed out, every page (a bookmarked page's address included) shows the sign-in screen only; two
users signed in from two browsers each see their own name; signing out ends the session, in the
user's other tabs too; the audit trail names both. Behind a declared proxy, the user comes from
the one header the app is told to trust. Everything listens on 127.0.0.1 only. Uses Debian's
Chromium, as tests/test_browser.py does; the pages read model cards only (nothing is uploaded), from
the shipped models/ folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import numpy as np
import pytest

from melanoma import access, audit
from tests.synthetic import lesion_image
from tests.test_browser import CHROMIUM, ROOT, free_port

SHIPPED_MODELS = ROOT / "models"
USERS = {
    "alice-sub": {"email": "alice@clinic.example", "name": "Dr Alice"},
    "bob-sub": {"email": "bob@clinic.example", "name": "Dr Bob"},
}
PAGES = ("", "compare", "validate", "model_cards")  # the app's page addresses; "" is Diagnose, the default
TIMEOUT_MS = 45_000

pytestmark = [
    pytest.mark.skipif(not CHROMIUM, reason="no Chromium found (make test installs Debian's chromium)"),
    pytest.mark.timeout(120),
]


@contextlib.contextmanager
def identity_provider(users: dict[str, dict], discovery_delay: float = 0.0) -> Iterator[str]:
    """oidc-provider-mock on 127.0.0.1 in a thread, with one-click sign-in for `users` (subject -> claims);
    its discovery document answers after `discovery_delay` seconds (a distant or busy provider)."""
    import oidc_provider_mock
    import werkzeug.serving

    claims = [oidc_provider_mock.User(sub=subject, claims=claims) for subject, claims in users.items()]
    provider = oidc_provider_mock.app(user_claims=claims)

    def answer(environ, start_response):
        if environ["PATH_INFO"] == "/.well-known/openid-configuration":
            time.sleep(discovery_delay)
        return provider(environ, start_response)

    server = werkzeug.serving.make_server("127.0.0.1", 0, answer, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="identity-provider", daemon=True)
    # Plain http on loopback, for the provider in this process (the app's server is told in app_server).
    with mock.patch.dict(os.environ, {"AUTHLIB_INSECURE_TRANSPORT": "1"}):
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_port}"
        finally:
            server.shutdown()
            thread.join(timeout=10)


def sign_in_secrets(folder: Path, port: int, issuer: str) -> Path:
    """A secrets.toml for the app on `port` signing in with the provider at `issuer`."""
    path = folder / "secrets.toml"
    path.write_text(
        f'[auth]\nredirect_uri = "http://127.0.0.1:{port}/oauth2callback"\n'
        f'cookie_secret = "{secrets.token_hex(32)}"\nclient_id = "melanoma"\nclient_secret = "test"\n'
        f'server_metadata_url = "{issuer}/.well-known/openid-configuration"\n'
        "client_kwargs = { timeout = 30 }\n"  # as the README's configuration
        f'[melanoma]\nallowed_issuers = ["{issuer}"]\n'  # the mock provider signs in the clinic's staff only
    )
    return path


@contextlib.contextmanager
def app_server(port: int, env: dict[str, str], secrets_file: Path | None = None) -> Iterator[subprocess.Popen]:
    """`streamlit run app.py` on 127.0.0.1:`port`, up once its health check answers (60 s at most)."""
    arguments = ["--server.address", "127.0.0.1", "--server.port", str(port), "--server.headless", "true"]
    if secrets_file is not None:
        arguments += ["--secrets.files", str(secrets_file)]
    process = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", *arguments],
        cwd=ROOT,
        env={**os.environ, "AUTHLIB_INSECURE_TRANSPORT": "1", **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2).close()
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError(
                        f"the app did not start on 127.0.0.1:{port} (exit status {process.poll()})"
                    ) from None
                time.sleep(0.5)
        yield process
    finally:
        process.terminate()
        process.wait(timeout=30)


def sign_in(page, url: str, subject: str) -> None:
    """Sign in through the app's sign-in screen and the provider's one-click form; waits for the app's pages."""
    page.goto(url, timeout=TIMEOUT_MS)
    page.get_by_role("button", name="Sign in").click(timeout=TIMEOUT_MS)
    page.get_by_role("button", name=subject).click(timeout=TIMEOUT_MS)  # the provider's predefined user
    page.get_by_text("Signed in as").wait_for(timeout=TIMEOUT_MS)


@pytest.fixture(scope="module")
def clinic(tmp_path_factory):
    """The app with sign-in against the mock provider: (app URL, audit folder)."""
    folder = tmp_path_factory.mktemp("clinic")
    port = free_port()
    with (
        identity_provider(USERS) as issuer,
        app_server(
            port,
            {"MELANOMA_MODELS_DIR": str(SHIPPED_MODELS), audit.AUDIT_DIR_ENV: str(folder / "audit")},
            sign_in_secrets(folder, port, issuer),
        ),
    ):
        yield f"http://127.0.0.1:{port}", folder / "audit"


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        yield chromium
        chromium.close()


def test_signed_out_every_page_shows_the_sign_in_screen_only(clinic, browser):
    url, _ = clinic
    page = browser.new_context().new_page()
    for path in PAGES:
        page.goto(f"{url}/{path}", timeout=TIMEOUT_MS)
        page.get_by_role("button", name="Sign in").wait_for(timeout=TIMEOUT_MS)
        page.locator('[data-testid="stApp"][data-test-script-state="notRunning"]').wait_for(timeout=TIMEOUT_MS)
        text = page.locator('[data-testid="stApp"]').inner_text()
        assert "Sign in with your clinic account" in text, path
        for title in ("Diagnose", "Compare models", "Validate on your images", "Model cards", "Upload"):
            assert title not in text, f"/{path} shows {title!r} to a signed-out visitor"
        assert not page.locator('[data-testid="stSidebarNav"], input[type=file]').count(), path
    page.context.close()


def test_two_users_sign_in_side_by_side_and_signing_out_ends_the_session(clinic, browser):
    url, audit_folder = clinic
    alice, bob = browser.new_context().new_page(), browser.new_context().new_page()
    sign_in(alice, url, "alice-sub")
    sign_in(bob, url, "bob-sub")
    alice.get_by_role("heading", name="Diagnose").wait_for(timeout=TIMEOUT_MS)
    assert "Dr Alice" in alice.locator('[data-testid="stSidebar"]').inner_text()
    # Signed in, a bookmarked page opens in place, as the same user.
    bob.goto(f"{url}/validate", timeout=TIMEOUT_MS)
    bob.get_by_role("heading", name="Validate on your images").wait_for(timeout=TIMEOUT_MS)
    bob.get_by_text("Signed in as").wait_for(timeout=TIMEOUT_MS)
    assert "Dr Bob" in bob.locator('[data-testid="stSidebar"]').inner_text()

    other_tab = alice.context.new_page()  # Alice's second tab, signed in by the same cookie
    other_tab.goto(url, timeout=TIMEOUT_MS)
    other_tab.get_by_text("Signed in as").wait_for(timeout=TIMEOUT_MS)

    alice.get_by_role("button", name="Sign out").click(timeout=TIMEOUT_MS)
    alice.get_by_role("button", name="End session").click(timeout=TIMEOUT_MS)  # the provider's own sign-out
    alice.get_by_role("button", name="Sign in").wait_for(timeout=TIMEOUT_MS)
    # The other tab, never reloaded, keeps its connection: its next step shows the sign-in screen.
    other_tab.get_by_role("link", name="Model cards").click(timeout=TIMEOUT_MS)
    other_tab.get_by_text("You signed out of this app").wait_for(timeout=TIMEOUT_MS)
    other_tab.get_by_role("button", name="Sign in").wait_for(timeout=TIMEOUT_MS)
    assert "Dr Alice" not in other_tab.locator('[data-testid="stApp"]').inner_text()
    alice.goto(f"{url}/model_cards", timeout=TIMEOUT_MS)  # the session is over, not only the page
    alice.get_by_role("button", name="Sign in").wait_for(timeout=TIMEOUT_MS)
    assert "Dr Alice" not in alice.locator('[data-testid="stApp"]').inner_text()
    bob.reload(timeout=TIMEOUT_MS)
    bob.get_by_text("Signed in as").wait_for(timeout=TIMEOUT_MS)  # the other user is still signed in
    assert "Dr Bob" in bob.locator('[data-testid="stSidebar"]').inner_text()
    for page in (alice, bob):
        page.context.close()

    events = list(audit.read_events(audit_folder))
    assert {event["user"]["subject"] for event in events} == {"alice-sub", "bob-sub"}
    assert {event["user"]["email"] for event in events} == {"alice@clinic.example", "bob@clinic.example"}
    assert {event["action"] for event in events} == {"session"}


def test_two_clinicians_reading_the_same_image_stay_apart_and_are_audited_without_file_names(clinic, browser, tmp_path):
    """Alice and Bob upload the same photograph under names that would identify a patient: each sees
    only their own upload and notes, and each reading is in the trail under its reader, by sha256."""
    url, audit_folder = clinic
    photograph = tmp_path / "Kovacs_Ilona_back.jpg"
    lesion_image(True, np.random.default_rng(7)).save(photograph, quality=95)
    alice, bob = browser.new_context().new_page(), browser.new_context().new_page()
    for page, subject in ((alice, "alice-sub"), (bob, "bob-sub")):
        sign_in(page, url, subject)
        page.locator("input[type=file]").set_input_files(str(photograph))
        page.get_by_text("melanoma probability").first.wait_for(timeout=3 * TIMEOUT_MS)
    # The report follows every member's map: the default combined reading draws three.
    notes = alice.get_by_role("textbox", name="Clinician's notes for the report")
    notes.wait_for(timeout=4 * TIMEOUT_MS)
    notes.fill("Alice's private note")
    alice.get_by_role("textbox", name="Clinician's notes for the report").press("Control+Enter")
    alice.get_by_text("Report").first.wait_for(timeout=TIMEOUT_MS)
    bob.reload(timeout=TIMEOUT_MS)  # a fresh run of Bob's session: nothing of Alice's may appear
    bob.get_by_role("heading", name="Diagnose").wait_for(timeout=TIMEOUT_MS)
    assert "Alice's private note" not in bob.locator('[data-testid="stApp"]').inner_text()
    for page in (alice, bob):
        page.context.close()

    digest = hashlib.sha256(photograph.read_bytes()).hexdigest()
    readings = [event for event in audit.read_events(audit_folder) if event["action"] == "reading"]
    assert {event["user"]["subject"] for event in readings} == {"alice-sub", "bob-sub"}
    assert {event["sha256"] for event in readings} == {digest}
    trail = "".join(path.read_text() for path in audit_folder.glob("audit.jsonl*"))
    assert "Kovacs" not in trail and "Ilona" not in trail and ".jpg" not in trail


def test_a_provider_slower_than_the_http_clients_default_still_signs_the_user_in(browser, tmp_path):
    """The server fetches the provider's discovery document at every sign-in, and Authlib's HTTP
    client gives up after 5 s by default: twenty clinicians signing in at once on two cores lost
    sign-ins that way (benchmarks/clinic_load.py). The README's `client_kwargs` timeout waits longer."""
    port = free_port()
    with (
        identity_provider(USERS, discovery_delay=6.0) as issuer,
        app_server(
            port,
            {"MELANOMA_MODELS_DIR": str(SHIPPED_MODELS), audit.AUDIT_DIR_ENV: str(tmp_path / "audit")},
            sign_in_secrets(tmp_path, port, issuer),
        ),
    ):
        page = browser.new_context().new_page()
        sign_in(page, f"http://127.0.0.1:{port}", "alice-sub")
        assert "Dr Alice" in page.locator('[data-testid="stSidebar"]').inner_text()
        page.context.close()


def test_behind_a_declared_proxy_the_user_comes_from_its_header_only(browser, tmp_path):
    port = free_port()
    env = {
        "MELANOMA_MODELS_DIR": str(SHIPPED_MODELS),
        audit.AUDIT_DIR_ENV: str(tmp_path),
        access.AUTH_ENV: "proxy",
        access.PROXY_USER_HEADER_ENV: "X-Forwarded-Email",
    }
    with app_server(port, env):
        url = f"http://127.0.0.1:{port}"
        direct = browser.new_context().new_page()  # a request that did not come through the proxy
        direct.goto(url, timeout=TIMEOUT_MS)
        direct.get_by_text("Expected exactly one, set by the proxy").wait_for(timeout=TIMEOUT_MS)
        assert not direct.locator("input[type=file]").count()
        proxied = browser.new_context(extra_http_headers={"X-Forwarded-Email": "carol@clinic.example"}).new_page()
        proxied.goto(url, timeout=TIMEOUT_MS)
        proxied.get_by_text("Sign-in is delegated to the reverse proxy").wait_for(timeout=TIMEOUT_MS)
        proxied.get_by_role("heading", name="Diagnose").wait_for(timeout=TIMEOUT_MS)
        for page in (direct, proxied):
            page.context.close()
    [event] = [json.loads(line) for line in (tmp_path / audit.LOG_NAME).read_text().splitlines()]
    assert event["user"] == {"subject": "carol@clinic.example", "email": "carol@clinic.example"}
