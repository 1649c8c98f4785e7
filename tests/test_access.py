"""Who may use the app: the policy (melanoma.access) and app.py applying it before any page runs."""

import json
import time

import pytest
from streamlit import config
from streamlit.testing.v1 import AppTest

from melanoma import access, audit
from melanoma.access import AccessRefused, Mode
from tests.conftest import ROOT

SHIPPED_MODELS = ROOT / "models"
AUTH = {
    "redirect_uri": "https://melanoma.clinic.example/oauth2callback",
    "cookie_secret": "s" * 64,
    "client_id": "melanoma",
    "client_secret": "secret",
    "server_metadata_url": "https://sso.clinic.example/.well-known/openid-configuration",
}
SHARED = {key: AUTH[key] for key in ("redirect_uri", "cookie_secret")}
PROVIDER = {key: AUTH[key] for key in access.PROVIDER_KEYS}
ISSUER = "https://sso.clinic.example"  # AUTH's provider, whose discovery document is ISSUER + DISCOVERY
ALLOWED = {"allowed_domains": ["clinic.example"]}  # [melanoma] in secrets.toml


def claims(**changes) -> dict:
    """st.user of a clinician signed in through AUTH's provider, as Streamlit's identity cookie holds it."""
    return {
        "is_logged_in": True,
        "provider": "default",
        "iss": ISSUER,
        "sub": "0a1b",
        "email": "dr@clinic.example",
        "email_verified": True,
        "name": "Dr A",
        "iat": int(time.time()) - 60,  # signed in a minute ago
        **changes,
    }


SIGN_IN = access.decide("0.0.0.0", AUTH, {}, ALLOWED)


@pytest.mark.parametrize(
    "address, loopback",
    [
        ("127.0.0.1", True),
        ("127.0.0.2", True),
        ("localhost", True),
        ("::1", True),
        ("[::1]", True),
        ("::ffff:127.0.0.1", True),
        ("0.0.0.0", False),
        ("::", False),
        ("", False),
        (None, False),
        ("192.168.1.20", False),
        ("melanoma.clinic.example", False),
        ("unix:///run/melanoma.sock", False),
    ],
)
def test_only_loopback_addresses_count_as_this_machine(address, loopback):
    assert access.is_loopback(address) is loopback


def test_without_sign_in_the_app_serves_loopback_only():
    assert access.decide("127.0.0.1", None, {}).mode is Mode.LOCAL
    for address in ("0.0.0.0", None, "10.0.0.5"):
        with pytest.raises(AccessRefused, match=r"refuses to serve.*\[auth\].*MELANOMA_AUTH=proxy"):
            access.decide(address, None, {})


def test_sign_in_or_a_declared_proxy_lets_it_serve_any_address():
    policy = access.decide("0.0.0.0", AUTH, {}, ALLOWED)
    assert policy.mode is Mode.SIGN_IN and policy.providers == (None,)
    behind = {access.AUTH_ENV: "proxy", access.PROXY_ADDRESSES_ENV: "10.0.0.5"}
    assert access.decide("0.0.0.0", None, behind).mode is Mode.PROXY


def test_plain_http_sign_in_is_accepted_for_this_machine_only():
    for uri in ("http://127.0.0.1:8501/oauth2callback", "http://localhost:{port}/oauth2callback"):
        assert access.decide("127.0.0.1", {**AUTH, "redirect_uri": uri}, {}, ALLOWED).mode is Mode.SIGN_IN


def test_named_providers_are_offered_each():
    policy = access.decide("0.0.0.0", {**SHARED, "clinicsso": PROVIDER, "backup": PROVIDER}, {}, ALLOWED)
    assert policy.providers == ("clinicsso", "backup")


@pytest.mark.parametrize(
    "auth, environ, expected",
    [
        ({**AUTH, "cookie_secret": "short"}, {}, "could be guessed"),
        ({key: value for key, value in AUTH.items() if key != "redirect_uri"}, {}, "lacks redirect_uri"),
        ({**AUTH, "redirect_uri": "https://melanoma.clinic.example/"}, {}, "ending in /oauth2callback"),
        ({**AUTH, "redirect_uri": "http://10.1.2.3:8501/oauth2callback"}, {}, "plain http to another machine"),
        ({**AUTH, "redirect_uri": "http://melanoma.clinic.example/oauth2callback"}, {}, "Expected https"),
        ({**AUTH, "client_secret": ""}, {}, r"\[auth\] in secrets.toml lacks client_secret"),
        (SHARED, {}, "names no identity provider"),
        ({**SHARED, "clinic_sso": PROVIDER}, {}, "underscore"),
        ({}, {}, "lacks redirect_uri, cookie_secret"),
        (AUTH, {access.AUTH_ENV: "proxy"}, "choose one"),
        (None, {access.AUTH_ENV: "yes"}, "expected `proxy`"),
        ("x", {}, r"not a table: expected an \[auth\] section"),
    ],
)
def test_an_incomplete_or_contradictory_configuration_is_refused_with_the_fix(auth, environ, expected):
    with pytest.raises(AccessRefused, match=expected):
        access.decide("127.0.0.1", auth, environ)


def test_the_signed_in_user_is_the_tokens_subject_and_email():
    assert access.signed_in_user(SIGN_IN, claims()) == audit.User("0a1b", "dr@clinic.example")
    with pytest.raises(AccessRefused, match="no subject"):
        access.signed_in_user(SIGN_IN, claims(sub=None))


@pytest.mark.parametrize("settings", [None, {}, {"allowed_domains": []}, {"max_session_hours": 8}])
def test_sign_in_without_an_allow_list_refuses_to_serve_and_says_what_to_add(settings):
    """Anyone the identity provider accepted got in: with Google, any Google account."""
    with pytest.raises(AccessRefused, match=r"(?s)nothing says who may sign in.*\n\[melanoma\]\nallowed_domains = "):
        access.decide("0.0.0.0", AUTH, {}, settings)


@pytest.mark.parametrize(
    "settings, expected",
    [
        ({"allowed_domains": "clinic.example"}, r"must be a list of text.*received 'clinic.example'"),
        ({"allowed_emails": [1]}, "must be a list of text"),
        ("clinic.example", r"must be a table, \[melanoma\]"),
    ],
)
def test_a_malformed_allow_list_is_refused_with_the_form_expected(settings, expected):
    with pytest.raises(AccessRefused, match=expected):
        access.decide("0.0.0.0", AUTH, {}, settings)


@pytest.mark.parametrize(
    "settings, changes",
    [
        ({"allowed_domains": ["Clinic.Example"]}, {}),
        ({"allowed_emails": ["locum@partner.example"]}, {"email": "Locum@Partner.example"}),
        (
            {"allowed_emails": ["email_verified", "as", "text"], "allowed_domains": ["clinic.example"]},
            {"email_verified": "true"},
        ),
        ({"allowed_issuers": [ISSUER + "/"]}, {"email": None, "email_verified": None}),  # the issuer vouches
    ],
)
def test_the_allow_list_admits_a_verified_email_its_domain_or_the_issuer(settings, changes):
    policy = access.decide("0.0.0.0", AUTH, {}, settings)
    assert access.signed_in_user(policy, claims(**changes)).subject == "0a1b"


@pytest.mark.parametrize(
    "changes, expected",
    [
        ({"email": "stranger@gmail.com", "iss": "https://accounts.google.com"}, "not on the allow-list"),
        ({"email": "dr@clinic.example.evil.test"}, "not on the allow-list"),
        ({"email": None, "name": "Dr A"}, "Signed in as Dr A, but this account is not on the allow-list"),
        ({"email_verified": False}, r"does not mark dr@clinic.example as verified.*allowed_issuers"),
        ({"email_verified": None}, "does not mark dr@clinic.example as verified"),
    ],
)
def test_a_user_outside_the_allow_list_is_refused_and_told_what_to_do(changes, expected):
    with pytest.raises(AccessRefused, match=f"{expected}.*Sign out and sign in with your clinic account"):
        access.signed_in_user(SIGN_IN, claims(**changes))


@pytest.mark.parametrize(
    "changes, expected",
    [
        ({"provider": "oldsso"}, "no longer uses"),  # its [auth.oldsso] since removed from secrets.toml
        ({"provider": None}, "no longer uses"),
        ({"iss": "https://accounts.google.com"}, "not from the identity provider now configured"),
        ({"iss": None}, "an unnamed issuer"),
    ],
)
def test_a_cookie_from_a_provider_no_longer_configured_must_sign_in_again(changes, expected):
    access.check_session(SIGN_IN, claims(iss=ISSUER + "/"), time.time(), None)  # Auth0's issuer ends in a slash
    with pytest.raises(access.SignInAgain, match=expected):
        access.check_session(SIGN_IN, claims(**changes), time.time(), None)


def test_a_sign_in_lasts_max_session_hours_and_ends_when_the_user_signs_out_anywhere():
    """Streamlit's identity cookie lasts 30 days, and signing out in one tab left the others signed in."""
    now = time.time()
    access.check_session(SIGN_IN, claims(iat=now - 11.9 * 3600), now, None)
    with pytest.raises(access.SignInAgain, match="more than 12 hours ago"):
        access.check_session(SIGN_IN, claims(iat=now - 12.1 * 3600), now, None)
    with pytest.raises(access.SignInAgain, match="more than 12 hours ago"):  # an ID token that expired in 2001
        access.check_session(SIGN_IN, claims(iat=999_996_400, exp=1_000_000_000), now, None)
    shift = access.decide("0.0.0.0", AUTH, {}, {**ALLOWED, "max_session_hours": 0.5})
    with pytest.raises(access.SignInAgain, match="more than 0.5 hours ago"):
        access.check_session(shift, claims(iat=now - 1800 - 1), now, None)
    with pytest.raises(access.SignInAgain, match="You signed out"):
        access.check_session(SIGN_IN, claims(iat=now - 60), now, signed_out_at=now - 30)
    access.check_session(SIGN_IN, claims(iat=now - 20), now, signed_out_at=now - 30)  # signed in again since
    assert (
        access.session_key(claims(iss=ISSUER + "/"))
        == access.session_key(claims())
        != access.session_key(claims(sub="other"))
    )


@pytest.mark.parametrize(
    "changes, expected",
    [
        ({"iat": None}, "`iat` claim is None; expected the time it was issued"),
        ({"iat": "yesterday"}, "`iat` claim is 'yesterday'"),
        ({"iat": time.time() + 3600}, "ahead of this server's clock.*NTP"),
    ],
)
def test_a_token_without_a_usable_issue_time_is_refused_with_what_to_check(changes, expected):
    with pytest.raises(AccessRefused, match=expected):
        access.check_session(SIGN_IN, claims(**changes), time.time(), None)


@pytest.mark.parametrize("hours", [0, -1, 721, "12", True])
def test_max_session_hours_must_be_a_number_of_hours_within_the_cookies_30_days(hours):
    with pytest.raises(AccessRefused, match=f"a number of hours above 0 and at most 720 .*; received {hours!r}"):
        access.decide("0.0.0.0", AUTH, {}, {**ALLOWED, "max_session_hours": hours})


def test_a_token_whose_email_is_not_an_address_keeps_its_subject_and_a_bad_subject_is_refused_with_the_claim():
    """'Dr Alice Smith' in `email` raised ValueError, a raw traceback in the browser."""
    allow_issuer = access.decide("0.0.0.0", AUTH, {}, {"allowed_issuers": [ISSUER]})
    assert access.signed_in_user(allow_issuer, claims(email="Dr Alice Smith")) == audit.User("0a1b")
    with pytest.raises(AccessRefused, match=r"subject \(`sub` claim\).*printable characters"):
        access.signed_in_user(SIGN_IN, claims(sub="x" * 300))


def test_a_proxy_header_the_audit_trail_cannot_hold_is_refused_naming_the_header():
    trusted = {access.PROXY_USER_HEADER_ENV: "X-Forwarded-User"}
    for value in ("u" * 300, "dr\x07"):
        with pytest.raises(AccessRefused, match=r"`X-Forwarded-User` header.*at most 256 printable"):
            access.proxy_user(trusted, {"x-forwarded-user": [value]})


def test_behind_the_proxy_the_user_comes_only_from_the_header_it_was_told_to_trust():
    headers = {"x-forwarded-email": ["dr@clinic.example"], "x-forwarded-user": ["forged"]}
    assert access.proxy_user({}, headers) == audit.PROXY  # no header named: nothing from the request is trusted
    trusted = {access.PROXY_USER_HEADER_ENV: "X-Forwarded-Email"}
    assert access.proxy_user(trusted, headers) == audit.User("dr@clinic.example", "dr@clinic.example")
    for values in ([], ["a@clinic.example", "b@clinic.example"], [" "]):
        with pytest.raises(AccessRefused, match="Expected exactly one"):
            access.proxy_user(trusted, {"x-forwarded-email": values})


LOCAL = access.Policy(Mode.LOCAL)


@pytest.mark.parametrize("host", ["127.0.0.1:8501", "localhost:8501", "[::1]:8501", "127.0.0.1", "LOCALHOST"])
def test_on_this_machine_only_a_request_to_a_loopback_host_is_served(host):
    access.check_request(LOCAL, {"host": [host], "upgrade": ["websocket"]}, None)
    access.check_request(LOCAL, {}, None)  # no browser connection: a script test


@pytest.mark.parametrize(
    "headers, received",
    [
        ({"host": ["192.0.2.2:8443"]}, "Host"),  # a TLS forwarder on this machine, opened from the network
        ({"host": ["melanoma.clinic.example"]}, "Host"),
        ({"upgrade": ["websocket"]}, "Host"),
        ({"host": ["127.0.0.1:8501"], "x-forwarded-for": ["10.0.0.7"]}, "x-forwarded-for"),
        ({"host": ["localhost:8501"], "forwarded": ["for=10.0.0.7"]}, "forwarded"),
        ({"host": ["localhost:8501"], "x-real-ip": ["10.0.0.7"]}, "x-real-ip"),
    ],
)
def test_on_this_machine_only_a_request_forwarded_from_elsewhere_is_refused(headers, received):
    with pytest.raises(AccessRefused, match=f"this machine only.*expected a Host of localhost.*received.*{received}"):
        access.check_request(LOCAL, headers, None)


def test_a_declared_proxy_beyond_loopback_must_name_its_addresses():
    """MELANOMA_AUTH=proxy on 0.0.0.0 let anyone on the network open the port directly and, with a
    user header, name themselves."""
    assert access.decide("127.0.0.1", None, {access.AUTH_ENV: "proxy"}) == access.Policy(Mode.PROXY)
    for address in ("0.0.0.0", None, "10.0.0.9"):
        with pytest.raises(AccessRefused, match=f"bypassing the proxy's sign-in.*set {access.PROXY_ADDRESSES_ENV}"):
            access.decide(address, None, {access.AUTH_ENV: "proxy"})
    with pytest.raises(AccessRefused, match="Expected the reverse proxy's IP addresses"):
        access.decide("0.0.0.0", None, {access.AUTH_ENV: "proxy", access.PROXY_ADDRESSES_ENV: "proxy.clinic"})
    forged = {access.AUTH_ENV: "proxy", access.PROXY_ADDRESSES_ENV: "10.0.0.5", access.FORWARDED_ALLOW_IPS_ENV: "*"}
    with pytest.raises(AccessRefused, match=f"could be forged.*unset {access.FORWARDED_ALLOW_IPS_ENV}"):
        access.decide("0.0.0.0", None, forged)


def test_behind_a_proxy_beyond_loopback_only_the_proxys_requests_are_served():
    environ = {access.AUTH_ENV: "proxy", access.PROXY_ADDRESSES_ENV: "10.0.0.5, fd00::/64"}
    policy = access.decide("0.0.0.0", None, environ)
    for peer in ("10.0.0.5", "fd00::7", "::ffff:10.0.0.5"):
        access.check_request(policy, {"host": ["melanoma.clinic.example"]}, peer)
    for peer in ("10.0.0.77", None):  # a clinic workstation; this machine (not declared)
        with pytest.raises(AccessRefused, match="not through it. Open the app at the proxy's address"):
            access.check_request(policy, {"host": ["10.0.0.9:8501"]}, peer)
    local = access.decide("0.0.0.0", None, {**environ, access.PROXY_ADDRESSES_ENV: "127.0.0.1"})
    access.check_request(local, {"host": ["localhost:8501"]}, None)


def connection(monkeypatch, headers: list[tuple[str, str]], peer: str | None) -> None:
    """What st.context reads of the browser's connection, which AppTest cannot set: its headers and address."""
    from types import SimpleNamespace

    from streamlit.runtime import context

    monkeypatch.setattr(context, "_get_client_context", lambda: SimpleNamespace(headers=headers, remote_ip=peer))


@pytest.fixture
def app(monkeypatch, tmp_path):
    """app.py in AppTest on the shipped models (cards only: nothing is uploaded), at a chosen address."""
    monkeypatch.setenv("MELANOMA_MODELS_DIR", str(SHIPPED_MODELS))
    monkeypatch.setenv(audit.AUDIT_DIR_ENV, str(tmp_path))
    monkeypatch.delenv(access.AUTH_ENV, raising=False)
    saved = config.get_option("server.address")

    def make(address: str | None, auth: dict | None = None, user: dict | None = None, allow=ALLOWED) -> AppTest:
        config.set_option("server.address", address)
        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
        if auth is not None:
            at.secrets["auth"] = auth
            if allow is not None:
                at.secrets["melanoma"] = allow
        at.user = user or {"is_logged_in": False}
        return at.run()

    yield make
    config.set_option("server.address", saved)


def test_the_app_refuses_to_serve_beyond_loopback_without_sign_in_and_says_how(app):
    for address in ("0.0.0.0", None):
        at = app(address)
        [error] = at.error
        assert "refuses to serve" in error.value and "[auth]" in error.value and "MELANOMA_AUTH=proxy" in error.value
        assert not at.title and not at.get("file_uploader")  # no page ran


def test_on_loopback_without_sign_in_the_pages_open_as_before(app):
    at = app("127.0.0.1")
    assert not at.error and [title.value for title in at.title] == ["Diagnose"]


def test_signed_out_the_sign_in_screen_is_all_there_is(app):
    at = app("0.0.0.0", AUTH)
    assert [button.label for button in at.button] == ["Sign in"]
    assert [title.value for title in at.title] == ["Melanoma decision support"] and not at.get("file_uploader")


def test_signed_in_the_sidebar_names_the_user_and_the_session_is_audited(app, tmp_path):
    at = app("0.0.0.0", AUTH, claims(sub="sidebar-sub"))  # a subject of its own: signing out is server-wide
    assert [title.value for title in at.title] == ["Diagnose"]
    assert "Dr A" in at.sidebar.caption[0].value and "dr@clinic.example" in at.sidebar.caption[0].value
    assert [button.label for button in at.sidebar.button] == ["Sign out"]
    at.run()  # a rerun of the same session is not a new session
    [event] = [json.loads(line) for line in (tmp_path / audit.LOG_NAME).read_text().splitlines()]
    assert event["user"] == {"subject": "sidebar-sub", "email": "dr@clinic.example"} and event["action"] == "session"
    at.sidebar.button[0].click().run()  # sign out: no page runs after it, as anyone
    assert not at.title and not at.get("file_uploader")


def test_an_unwritable_audit_trail_keeps_the_app_closed(app, tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv(audit.AUDIT_DIR_ENV, str(blocker / "audit"))
    at = app("0.0.0.0", AUTH, claims())
    assert "cannot be written" in at.error[0].value and not at.title


def test_a_display_name_in_the_email_claim_opens_the_app_under_the_subject(app, tmp_path):
    at = app("0.0.0.0", AUTH, claims(email="Dr Alice Smith"), {"allowed_issuers": [ISSUER]})
    assert not at.exception and [title.value for title in at.title] == ["Diagnose"]
    [event] = audit.read_events(tmp_path)
    assert event["user"] == {"subject": "0a1b", "email": None}


def test_on_this_machine_only_a_page_opened_through_a_forwarder_shows_nothing(app, monkeypatch):
    """A TLS forwarder on 192.0.2.2:8443 to 127.0.0.1:8501 opened the app without sign-in to the network."""
    connection(monkeypatch, [("Host", "192.0.2.2:8443"), ("Upgrade", "websocket")], "127.0.0.1")
    at = app("127.0.0.1")
    [error] = at.error
    assert "this machine only" in error.value and "192.0.2.2:8443" in error.value
    assert not at.title and not at.get("file_uploader")
    connection(monkeypatch, [("Host", "127.0.0.1:8501"), ("Upgrade", "websocket")], "127.0.0.1")
    assert [title.value for title in app("127.0.0.1").title] == ["Diagnose"]


def test_behind_a_proxy_a_workstation_opening_the_port_directly_sees_nothing(app, monkeypatch):
    monkeypatch.setenv(access.AUTH_ENV, "proxy")
    monkeypatch.setenv(access.PROXY_USER_HEADER_ENV, "X-Forwarded-Email")
    at = app("0.0.0.0")
    assert access.PROXY_ADDRESSES_ENV in at.error[0].value and not at.title
    monkeypatch.setenv(access.PROXY_ADDRESSES_ENV, "10.0.0.5")
    forged = [("Host", "10.0.0.9:8501"), ("X-Forwarded-Email", "chief@clinic.example")]
    connection(monkeypatch, forged, "10.0.0.77")
    at = app("0.0.0.0")
    assert "came from 10.0.0.77" in at.error[0].value and not at.title and not at.get("file_uploader")
    connection(monkeypatch, forged, "10.0.0.5")
    at = app("0.0.0.0")
    assert [title.value for title in at.title] == ["Diagnose"] and "chief@clinic.example" in at.sidebar.caption[0].value


def test_a_stranger_signed_in_sees_why_and_a_sign_out_button_only(app, tmp_path):
    """stranger@gmail.com, signed in through Google, opened every page and was audited as a clinician."""
    stranger = claims(sub="1098", email="stranger@gmail.com", name="Stranger")
    at = app(
        "0.0.0.0",
        {**AUTH, "server_metadata_url": "https://accounts.google.com/.well-known/openid-configuration"},
        {**stranger, "iss": "https://accounts.google.com"},
    )
    [error] = at.error
    assert "Signed in as stranger@gmail.com" in error.value and "not on the allow-list" in error.value
    assert [button.label for button in at.button] == ["Sign out"]
    assert not at.title and not at.get("file_uploader") and not (tmp_path / audit.LOG_NAME).exists()
    at.button[0].click().run()
    assert not at.title and not at.get("file_uploader")


def test_sign_in_without_an_allow_list_shows_nothing_but_what_to_add(app):
    at = app("0.0.0.0", AUTH, claims(), allow=None)
    assert "nothing says who may sign in" in at.error[0].value and "allowed_domains" in at.error[0].value
    assert not at.title and not at.get("file_uploader")


def test_a_cookie_from_a_removed_provider_shows_the_sign_in_screen_and_says_why(app):
    at = app("0.0.0.0", AUTH, claims(provider="oldsso"))
    assert "no longer uses" in at.warning[0].value and [button.label for button in at.button] == ["Sign in"]
    assert [title.value for title in at.title] == ["Melanoma decision support"] and not at.get("file_uploader")


def test_signing_out_in_one_tab_ends_the_users_other_tabs(app, tmp_path):
    """Alice signed out in one tab; another tab she had open went on reading images under her name."""
    alice = claims(sub="alice-sub", email="alice@clinic.example")
    first, second = app("0.0.0.0", AUTH, alice), app("0.0.0.0", AUTH, alice)
    assert [title.value for title in second.title] == ["Diagnose"]
    first.sidebar.button[0].click().run()  # Sign out
    second.run()
    assert "You signed out" in second.warning[0].value and [button.label for button in second.button] == ["Sign in"]
    assert not second.get("file_uploader") and not second.sidebar.button
    again = app("0.0.0.0", AUTH, {**alice, "iat": int(time.time()) + 1})  # signed in again since: welcome
    assert [title.value for title in again.title] == ["Diagnose"]
    bob = app("0.0.0.0", AUTH, claims(sub="bob-sub", email="bob@clinic.example"))  # others are not signed out
    assert [title.value for title in bob.title] == ["Diagnose"]


def test_a_session_older_than_max_session_hours_shows_the_sign_in_screen(app):
    at = app("0.0.0.0", AUTH, claims(iat=int(time.time()) - 13 * 3600))
    assert "more than 12 hours ago" in at.warning[0].value and [button.label for button in at.button] == ["Sign in"]
    assert not at.get("file_uploader") and [title.value for title in at.title] == ["Melanoma decision support"]


def test_a_download_drawn_before_the_user_signed_out_in_another_tab_is_refused(app, downloads, tmp_path):
    """The button's data is built when clicked, outside the page's run: it asks whether the sign-in still holds."""
    from tests.test_app import jpeg

    carol = claims(sub="carol-sub", email="carol@clinic.example")
    tab, other = app("0.0.0.0", AUTH, carol), app("0.0.0.0", AUTH, carol)
    tab.file_uploader[0].set_value(("lesion.jpg", jpeg(True, seed=5), "image/jpeg")).run()
    assert not tab.exception
    [results] = [button for button in tab.download_button if button.label == "Download results (CSV)"]
    other.sidebar.button[0].click().run()  # Sign out
    with pytest.raises(access.SignInAgain, match="You signed out"):
        downloads[results]
    assert "results download" not in [event["action"] for event in audit.read_events(tmp_path)]
