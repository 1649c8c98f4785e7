"""Melanoma decision support: the entry point decides who may use the app, then navigates.

Pages live in app_pages/ and run only through st.navigation below, so what is decided here holds
for every page, a bookmarked page's address included: a server that may not serve (beyond this
machine without sign-in) says why and stops, and with sign-in configured a signed-out visitor sees
the sign-in screen and nothing else. The policy itself is melanoma.access's.
"""

import os
import time
from collections.abc import Callable
from pathlib import Path

import streamlit as st
from streamlit.delta_generator import DeltaGenerator

import ui
from melanoma import access
from melanoma.audit import LOCAL, Action, AuditLog, AuditUnavailable, User


def secret_table(name: str) -> object:
    """A table of the secrets ([auth], [melanoma]); None when there is none. A secrets file that
    exists but cannot be read refuses, rather than silently serving without sign-in."""
    try:
        return st.secrets.get(name)
    except FileNotFoundError as error:  # Streamlit's: no secrets file, or one that does not parse
        if any(Path(file).exists() for file in st.get_option("secrets.files")):
            raise access.AccessRefused(f"The secrets file cannot be read: {error}") from error
        return None


def request_headers() -> access.Headers:
    """This session's request headers by lower-case name, every value of each, as melanoma.access reads them."""
    headers = st.context.headers
    return {name.lower(): headers.get_all(name) for name in headers}


def sign_in_screen(providers: tuple[str | None, ...], reason: str | None = None) -> None:
    """All a signed-out visitor sees; `reason` says why a signed-in session must sign in again."""
    st.title("Melanoma decision support")
    if reason:
        st.warning(reason, icon=":material/logout:")
    st.info(
        "Sign in with your clinic account to continue. Every reading is recorded under your name in the "
        "clinic's audit trail.",
        icon=":material/lock:",
    )
    for provider in providers:
        if st.button(
            "Sign in" if provider is None else f"Sign in with {provider}", type="primary", key=f"sign-in-{provider}"
        ):
            st.login(provider)
    st.stop()


@st.cache_resource
def sign_outs() -> dict[str, float]:
    """When each user (access.session_key) last signed out of this server: Streamlit's st.logout
    clears the cookie of one browser, and the user's other tabs would otherwise go on as them."""
    return {}


def sign_out_button(where: DeltaGenerator, key: str) -> None:
    """Sign out of every tab: recorded before st.logout, which clears the identity it reads from.
    Streamlit redirects, but lets the run go on, so it stops here."""
    if where.button("Sign out", key=key):
        if st.user.get("is_logged_in"):
            sign_outs()[access.session_key(st.user.to_dict())] = time.time()
        st.logout()
        st.stop()


def session_check(policy: access.Policy, claims: dict) -> Callable[[], None]:
    """What a download asks before it leaves: whether this session's sign-in still holds, now."""

    def check() -> None:
        access.check_session(policy, claims, time.time(), sign_outs().get(access.session_key(claims)))

    return check


def session_user() -> User:
    """Who this session acts as; the run stops on the sign-in screen, or on an error when the app must not serve."""
    policy = access.decide(st.get_option("server.address"), secret_table("auth"), os.environ, secret_table("melanoma"))
    access.check_request(policy, request_headers(), st.context.ip_address)
    ui.prepare_in_background()  # once this server may serve: the models load while the clinician signs in
    if policy.mode is access.Mode.LOCAL:
        return LOCAL
    if policy.mode is access.Mode.PROXY:
        user = access.proxy_user(os.environ, request_headers())
        st.sidebar.caption(
            f"Sign-in is delegated to the reverse proxy in front of this app. Recorded as: **{user.subject}**."
        )
    else:
        if not st.user.get("is_logged_in"):
            sign_in_screen(policy.providers)
        claims = st.user.to_dict()
        st.session_state[access.SESSION_CHECK] = session_check(policy, claims)
        try:
            st.session_state[access.SESSION_CHECK]()
        except access.SignInAgain as reason:
            sign_in_screen(policy.providers, str(reason))
        user = access.signed_in_user(policy, claims)
        st.sidebar.caption(
            f"Signed in as **{st.user.get('name') or user.email or user.subject}**"
            + (f" ({user.email})" if user.email and st.user.get("name") else "")
        )
        sign_out_button(st.sidebar, "sign-out")
    if st.session_state.get(access.SESSION_USER) != user:
        AuditLog().record(user, Action.SESSION)  # once per session: who opened the app, and when
    return user


st.set_page_config(page_title="Melanoma decision support", page_icon="🩺", layout="wide")
try:
    st.session_state[access.SESSION_USER] = session_user()
except (access.AccessRefused, AuditUnavailable) as refusal:
    st.error(str(refusal), icon=":material/block:")
    if st.user.get("is_logged_in"):  # signed in as someone the app refuses: let them sign in as another
        sign_out_button(st.container(), "sign-out-refused")
    st.stop()
# Material Symbols, which Streamlit serves itself: emoji need a colour-emoji font that a clinic's
# locked-down workstation may lack (they drew as empty boxes in Debian's Chromium without one).
navigation = st.navigation(
    [
        st.Page("app_pages/diagnose.py", title="Diagnose", icon=":material/biotech:", default=True),
        st.Page("app_pages/compare.py", title="Compare models", icon=":material/bar_chart:"),
        st.Page("app_pages/validate.py", title="Validate on your images", icon=":material/fact_check:"),
        st.Page("app_pages/model_cards.py", title="Model cards", icon=":material/description:"),
    ]
)
navigation.run()
