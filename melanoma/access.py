"""Who may use the app, decided before any page runs. No Streamlit here: app.py passes in what it read.

Safe by default: without sign-in the app serves this machine only (a loopback address). Anything
wider needs one of two kinds of sign-in, chosen by configuration, never by guessing:

- the clinic's identity provider through Streamlit's OpenID Connect (`[auth]` in
  .streamlit/secrets.toml; st.login), so every page asks for sign-in, and only the people the
  allow-list (`[melanoma]` in the same file) names get in, for at most `max_session_hours` and
  never again after they signed out, in whichever tab;
- MELANOMA_AUTH=proxy, declaring that an authenticating reverse proxy stands in front of the app
  and is the only way to reach it. The app then cannot know who is signed in unless the proxy
  names the user in a header that it sets itself: MELANOMA_PROXY_USER_HEADER names that header.

A configuration that is incomplete, contradictory or weak is refused with what to change
(AccessRefused), so a mistake closes the app rather than opening it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from urllib.parse import urlsplit

from melanoma.audit import PROXY, User

AUTH_ENV = "MELANOMA_AUTH"
PROXY_USER_HEADER_ENV = "MELANOMA_PROXY_USER_HEADER"
PROXY_ADDRESSES_ENV = "MELANOMA_PROXY_ADDRESSES"
FORWARDED_ALLOW_IPS_ENV = "FORWARDED_ALLOW_IPS"  # uvicorn's: whose X-Forwarded-For replaces a peer's address
SESSION_USER = "melanoma_user"  # st.session_state key: app.py leaves the audit.User there for the pages
SESSION_CHECK = "melanoma_session_check"  # st.session_state key: a callable raising once the sign-in has ended
SETTINGS = "melanoma"  # the secrets table of the app's own sign-in settings
PROVIDER_KEYS = ("client_id", "client_secret", "server_metadata_url")
DEFAULT_PROVIDER = "default"  # how Streamlit's identity cookie names the provider of [auth] itself
FORWARDING_HEADERS = ("x-forwarded-for", "forwarded", "x-real-ip")
Headers = Mapping[str, Sequence[str]]  # a request's headers by lower-case name, every value of each
MIN_COOKIE_SECRET = 32  # characters; the cookie secret signs the identity cookie, so a short one can be guessed
MAX_SESSION_HOURS = 12  # a clinic's day: Streamlit's identity cookie alone lasts 30 days
COOKIE_HOURS = 30 * 24  # Streamlit's identity cookie: no longer session is reachable
CLOCK_SKEW = 300  # seconds an identity token's iat may lie ahead of this server's clock
ALLOW_LIST_EXAMPLE = (
    f"[{SETTINGS}]\n"
    'allowed_domains = ["clinic.example"]          # anyone whose verified e-mail is at this domain\n'
    'allowed_emails = ["locum@partner.example"]    # these people\n'
    'allowed_issuers = ["https://sso.clinic.example/realms/clinic"]  # anyone this provider signs in\n'
    f"max_session_hours = {MAX_SESSION_HOURS}                         # then sign in again (the default)"
)
HOW_TO_SIGN_IN = (
    "To serve a clinic network, configure sign-in with the clinic's identity provider: an `[auth]` section in "
    "`.streamlit/secrets.toml` with `redirect_uri` (https://HOST/oauth2callback), `cookie_secret`, `client_id`, "
    f"`client_secret` and `server_metadata_url`, and a `[{SETTINGS}]` allow-list of who may sign in (see the "
    "README, Privacy and deployment). Behind an authenticating reverse proxy that alone can reach the app, set "
    f"{AUTH_ENV}=proxy instead. Otherwise serve this machine only: `make run`, or `--server.address 127.0.0.1`."
)


class AccessRefused(Exception):
    """The app must not serve with this configuration; the message says why and what to change."""


class SignInAgain(Exception):
    """This session's sign-in no longer holds (too old, signed out, or its provider no longer
    configured): the sign-in screen says why, and a fresh sign-in continues."""


class Mode(Enum):
    LOCAL = "local"  # loopback only, no sign-in
    SIGN_IN = "sign-in"  # Streamlit's OIDC, every page behind st.login
    PROXY = "proxy"  # an authenticating reverse proxy in front


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class AllowList:
    """Who may sign in, any one rule admitting: `[melanoma]` in secrets.toml."""

    emails: frozenset[str] = frozenset()  # lower case
    domains: frozenset[str] = frozenset()  # lower case
    issuers: frozenset[str] = frozenset()  # without a trailing slash


@dataclass(frozen=True)
class Policy:
    mode: Mode
    providers: tuple[str | None, ...] = ()  # st.login's argument per identity provider; None: [auth]'s own
    metadata_urls: Mapping[str, str] = field(default_factory=dict)  # SIGN_IN: cookie's provider name -> discovery URL
    allow: AllowList = AllowList()  # SIGN_IN: who may sign in
    max_session_seconds: float = MAX_SESSION_HOURS * 3600.0  # SIGN_IN: then sign in again
    proxies: tuple[Network, ...] = ()  # PROXY on an address beyond loopback: the proxy's, the only peers served


def is_loopback(address: str | None) -> bool:
    """Whether a server address (server.address) reaches this machine only. Unset means every
    interface, so it is not loopback."""
    if not address:
        return False
    if address.strip().lower() == "localhost":
        return True
    try:
        ip = ipaddress.ip_address(address.strip().strip("[]"))
    except ValueError:  # a host name, or unix://…: not provably local
        return False
    mapped = getattr(ip, "ipv4_mapped", None)  # ::ffff:127.0.0.1
    return (mapped or ip).is_loopback


def _names(settings: Mapping, key: str) -> frozenset[str]:
    value = settings.get(key, [])
    if isinstance(value, str) or not isinstance(value, Sequence) or not all(isinstance(v, str) and v for v in value):
        raise AccessRefused(
            f"`{key}` in [{SETTINGS}] of secrets.toml must be a list of text, such as "
            f'{key} = ["clinic.example"]; received {value!r:.80}.'
        )
    return frozenset(v.strip().lower().rstrip("/") for v in value)


def allow_list(settings: object) -> AllowList:
    """Who may sign in, from the [melanoma] secrets table; refuses an empty or malformed one, since
    without it anyone the identity provider accepts (any Google account, say) would get in."""
    if settings is None:
        settings = {}
    if not isinstance(settings, Mapping):
        raise AccessRefused(f"`{SETTINGS}` in secrets.toml must be a table, [{SETTINGS}]; received {settings!r:.80}.")
    allow = AllowList(*(_names(settings, key) for key in ("allowed_emails", "allowed_domains", "allowed_issuers")))
    if not (allow.emails or allow.domains or allow.issuers):
        raise AccessRefused(
            "Sign-in is configured, but nothing says who may sign in, so anyone the identity provider accepts "
            "would get in. The app refuses to serve. Add to `.streamlit/secrets.toml` an allow-list with one or "
            f"more of these lines:\n\n{ALLOW_LIST_EXAMPLE}\n\nThe e-mail rules need the provider to mark the "
            "e-mail verified (`email_verified`); for a provider that signs in the clinic's staff only, list its "
            "issuer (`issuer` in its server_metadata_url's document) instead."
        )
    return allow


def max_session_seconds(settings: object) -> float:
    """How long a sign-in lasts: `max_session_hours` in [melanoma], else MAX_SESSION_HOURS."""
    hours = settings.get("max_session_hours", MAX_SESSION_HOURS) if isinstance(settings, Mapping) else MAX_SESSION_HOURS
    if isinstance(hours, bool) or not isinstance(hours, int | float) or not 0 < hours <= COOKIE_HOURS:
        raise AccessRefused(
            f"`max_session_hours` in [{SETTINGS}] of secrets.toml must be a number of hours above 0 and at most "
            f"{COOKIE_HOURS} (Streamlit's identity cookie lasts 30 days); received {hours!r:.80}. Leave it out "
            f"for {MAX_SESSION_HOURS}."
        )
    return float(hours) * 3600


def providers(auth: Mapping) -> dict[str, tuple[str | None, str]]:
    """The identity providers configured in [auth], checked as st.login will need them: by the name
    Streamlit's identity cookie gives each, st.login's argument and the discovery URL."""
    missing = [key for key in ("redirect_uri", "cookie_secret") if not auth.get(key)]
    if missing:
        raise AccessRefused(
            f"Sign-in is configured (`[auth]` in secrets.toml) but lacks {', '.join(missing)}. " + HOW_TO_SIGN_IN
        )
    redirect = urlsplit(str(auth["redirect_uri"]).replace("{port}", "1"))
    if redirect.scheme not in ("http", "https") or not redirect.netloc or not redirect.path.endswith("/oauth2callback"):
        raise AccessRefused(
            "`redirect_uri` in [auth] must be the app's absolute address ending in /oauth2callback, "
            "such as https://melanoma.clinic.example/oauth2callback; "
            f"received {auth['redirect_uri']!r}."
        )
    if redirect.scheme != "https" and not is_loopback(redirect.hostname):
        raise AccessRefused(
            f"`redirect_uri` in [auth] is {auth['redirect_uri']!r}: plain http to another machine, so the identity "
            "cookie, which signs the clinician in for days, would cross the network unencrypted. Expected https "
            "(https://HOST/oauth2callback, TLS at a reverse proxy or Streamlit's server.sslCertFile); plain http "
            "only for this machine (127.0.0.1 or localhost)."
        )
    if len(str(auth["cookie_secret"])) < MIN_COOKIE_SECRET:
        raise AccessRefused(
            f"`cookie_secret` in [auth] signs the identity cookie and has fewer than "
            f"{MIN_COOKIE_SECRET} characters, so it could be guessed. Generate one with "
            "`python -c 'import secrets; print(secrets.token_hex(32))'`."
        )
    sections = {None: auth} if any(key in auth for key in PROVIDER_KEYS) else {}
    sections.update(
        {
            name: value
            for name, value in auth.items()
            if isinstance(value, Mapping) and any(key in value for key in PROVIDER_KEYS)
        }
    )
    if not sections:
        raise AccessRefused(
            "Sign-in is configured (`[auth]` in secrets.toml) but names no identity provider: add "
            f"{', '.join(PROVIDER_KEYS)} to [auth], or to an [auth.NAME] section per provider."
        )
    for name, section in sections.items():
        where = "[auth]" if name is None else f"[auth.{name}]"
        if name is not None and "_" in name:
            raise AccessRefused(
                f"Provider name {name!r} contains an underscore, which Streamlit's sign-in does "
                "not accept: rename the section, e.g. [auth.clinicsso]."
            )
        lacking = [key for key in PROVIDER_KEYS if not section.get(key)]
        if lacking:
            raise AccessRefused(
                f"{where} in secrets.toml lacks {', '.join(lacking)}: the values come from "
                "registering this app with the clinic's identity provider."
            )
    return {
        DEFAULT_PROVIDER if name is None else name: (name, str(section["server_metadata_url"]))
        for name, section in sections.items()
    }


def proxy_networks(environ: Mapping[str, str]) -> tuple[Network, ...]:
    """The proxy's addresses: MELANOMA_PROXY_ADDRESSES, addresses or networks, comma-separated."""
    text = environ.get(PROXY_ADDRESSES_ENV, "")
    try:
        return tuple(ipaddress.ip_network(part.strip(), strict=False) for part in text.split(",") if part.strip())
    except ValueError as error:
        raise AccessRefused(
            f"{PROXY_ADDRESSES_ENV} is {text!r}: {error}. Expected the reverse proxy's IP addresses or networks, "
            "comma-separated, such as 10.0.0.5 or 10.0.0.5,fd00::5 or 10.0.0.0/29."
        ) from None


def _proxy_policy(address: str | None, environ: Mapping[str, str]) -> Policy:
    """Behind a proxy on this machine, a loopback address is enough; on any other, only the
    declared proxy may connect, or anyone on the network could bypass its sign-in."""
    if is_loopback(address):
        return Policy(Mode.PROXY)
    proxies = proxy_networks(environ)
    if not proxies:
        where = f"address {address}" if address else "every network interface (server.address is not set)"
        raise AccessRefused(
            f"{AUTH_ENV}=proxy, and this server listens on {where}: anyone on the network could open its port "
            "directly, bypassing the proxy's sign-in (and, with a user header, name themselves). It refuses to "
            f"serve. Either listen on 127.0.0.1 with the proxy on this machine, or set {PROXY_ADDRESSES_ENV} to "
            "the proxy's IP addresses (comma-separated, such as 10.0.0.5), so that requests from anywhere else "
            "are refused."
        )
    trusted = [part.strip() for part in environ.get(FORWARDED_ALLOW_IPS_ENV, "").split(",") if part.strip()]
    if any(not is_loopback(part) for part in trusted):
        raise AccessRefused(
            f"{FORWARDED_ALLOW_IPS_ENV} is {environ[FORWARDED_ALLOW_IPS_ENV]!r}: the web server then takes a "
            "request's address from the X-Forwarded-For those hosts send, so the check that requests come from "
            f"the proxy ({PROXY_ADDRESSES_ENV}) could be forged. Expected it unset: unset {FORWARDED_ALLOW_IPS_ENV}."
        )
    return Policy(Mode.PROXY, proxies=proxies)


def decide(address: str | None, auth: object, environ: Mapping[str, str], settings: object = None) -> Policy:
    """The policy for a server bound to `address` with these [auth] and [melanoma] secrets and environment."""
    declared = environ.get(AUTH_ENV, "").strip().lower()
    if declared not in ("", Mode.PROXY.value):
        raise AccessRefused(
            f"{AUTH_ENV} is {environ[AUTH_ENV]!r}; expected `proxy` (an authenticating reverse "
            "proxy stands in front of the app) or unset."
        )
    if auth is not None and declared:
        raise AccessRefused(
            f"Both sign-in (`[auth]` in secrets.toml) and {AUTH_ENV}=proxy are configured: choose "
            f"one. Keep [auth] for the app's own sign-in, or unset {AUTH_ENV}."
        )
    if auth is not None:
        if not isinstance(auth, Mapping):
            raise AccessRefused(
                f"`auth` in secrets.toml is {auth!r:.80}, not a table: expected an [auth] section. " + HOW_TO_SIGN_IN
            )
        configured = providers(auth)
        return Policy(
            Mode.SIGN_IN,
            tuple(login for login, _ in configured.values()),
            {name: url for name, (_, url) in configured.items()},
            allow_list(settings),
            max_session_seconds(settings),
        )
    if declared:
        return _proxy_policy(address, environ)
    if not is_loopback(address):
        where = f"address {address}" if address else "every network interface (server.address is not set)"
        raise AccessRefused(
            f"This server listens on {where} without sign-in, so anyone who can reach it could "
            f"read patients' images. It refuses to serve. {HOW_TO_SIGN_IN}"
        )
    return Policy(Mode.LOCAL)


def _values(headers: Headers, name: str) -> list[str]:
    return [value for value in headers.get(name, ()) if value is not None]


def check_request(policy: Policy, headers: Headers, peer: str | None) -> None:
    """Refuse a request that this policy does not serve: in LOCAL mode, one that reached this
    machine's port through a forwarder or proxy on it from elsewhere (a Host beyond loopback, or
    forwarding headers), since serving without sign-in is safe for this machine only; in PROXY mode
    beyond loopback, one whose peer (st.context.ip_address; None for loopback) is not the proxy.
    `headers` are empty without a browser connection (a script test); a browser's request always has a Host."""
    if policy.mode is Mode.LOCAL and headers:
        forwarded = [name for name in FORWARDING_HEADERS if _values(headers, name)]
        hosts = _values(headers, "host")
        host = urlsplit(f"//{hosts[0]}").hostname if len(hosts) == 1 else None
        if forwarded or not is_loopback(host):
            received = f"forwarding headers ({', '.join(forwarded)})" if forwarded else f"Host {hosts!r:.120}"
            raise AccessRefused(
                "This app serves this machine only, without sign-in, but this request came from elsewhere "
                "through a forwarder or proxy on this machine: expected a Host of localhost, 127.0.0.1 or [::1] "
                f"and no forwarding headers; received {received}. Open http://127.0.0.1:PORT on this machine. "
                + HOW_TO_SIGN_IN
            )
    if policy.mode is Mode.PROXY and policy.proxies:
        try:
            ip = ipaddress.ip_address((peer or "127.0.0.1").strip("[]"))
        except ValueError:
            ip = None
        mapped = getattr(ip, "ipv4_mapped", None)
        if ip is None or not any((mapped or ip) in network for network in policy.proxies):
            raise AccessRefused(
                f"This app is served through the reverse proxy ({PROXY_ADDRESSES_ENV}: "
                f"{', '.join(map(str, policy.proxies))}), but this request came from {peer or 'this machine'}, "
                "not through it. Open the app at the proxy's address. If this is the proxy's address, add it to "
                f"{PROXY_ADDRESSES_ENV}."
            )


def session_key(claims: Mapping) -> str:
    """Who signed in, as the server's record of sign-outs knows them: the token's issuer and subject."""
    return f"{str(claims.get('iss') or '').rstrip('/')} {claims.get('sub')}"


def check_session(policy: Policy, claims: Mapping, now: float, signed_out_at: float | None) -> None:
    """SignInAgain when a signed-in session must sign in afresh: Streamlit's identity cookie lasts
    30 days whatever the configuration says now, and each tab keeps its own session after another
    signs out. So: its identity cookie came from a provider no longer configured under its name
    (removed from secrets.toml, or another put in its place); it began more than
    `max_session_seconds` before `now`; or before this user last signed out of this server
    (`signed_out_at`, from session_key).

    A session begins at the token's `iat`, this sign-in, not at `auth_time`: a provider whose own
    session outlives ours would give each new sign-in the old `auth_time` and lock the user out."""
    provider = claims.get("provider")
    if provider not in policy.metadata_urls:
        raise SignInAgain(
            f"Your sign-in came from an identity provider this app no longer uses ({provider!s:.40}): sign in again."
        )
    issuer = str(claims.get("iss") or "").rstrip("/")
    if not issuer or not policy.metadata_urls[provider].startswith(issuer + "/"):
        raise SignInAgain(
            f"Your sign-in came from {issuer or 'an unnamed issuer'!s:.120}, not from the identity provider now "
            "configured for it: sign in again."
        )
    issued = claims.get("iat")
    if isinstance(issued, bool) or not isinstance(issued, int | float):
        raise AccessRefused(
            f"The identity token's `iat` claim is {issued!r:.40}; expected the time it was issued, in seconds since "
            "1970, as every OpenID Connect provider sets it, so that sign-in can end after max_session_hours. "
            "Check that the provider is an OpenID Connect provider."
        )
    if issued > now + CLOCK_SKEW:
        raise AccessRefused(
            f"The identity token was issued {issued - now:.0f} s ahead of this server's clock; expected at most "
            f"{CLOCK_SKEW} s. Synchronise this server's clock (NTP) with the identity provider's."
        )
    if now - issued > policy.max_session_seconds:
        raise SignInAgain(
            f"You signed in more than {policy.max_session_seconds / 3600:g} hours ago: sign in again to continue."
        )
    if signed_out_at is not None and issued < signed_out_at:
        raise SignInAgain("You signed out of this app (in this or another tab or window): sign in again to continue.")


def signed_in_user(policy: Policy, claims: Mapping) -> User:
    """The audit user of a session signed in with st.login (the token's subject and e-mail), once the
    allow-list admits them: by their verified e-mail or its domain, or by the token's issuer."""
    if not claims.get("sub"):
        raise AccessRefused(
            "The identity provider's token names no subject (`sub` claim), so the audit trail "
            "could not say who acted. Check that the provider is an OpenID Connect provider."
        )
    try:
        user = User(str(claims["sub"]), _email(claims))
    except ValueError as error:
        raise AccessRefused(
            f"The identity token's subject (`sub` claim) cannot name the user in the audit trail: {error}. "
            "Expected the provider's stable identifier of the user; check the provider's token settings."
        ) from None
    if str(claims.get("iss") or "").rstrip("/").lower() in policy.allow.issuers:
        return user
    listed = user.email is not None and (
        user.email.lower() in policy.allow.emails or user.email.rsplit("@", 1)[1].lower() in policy.allow.domains
    )
    verified = claims.get("email_verified") in (True, "true")  # some providers send the text "true"
    if listed and verified:
        return user
    reason = (
        f"the identity provider does not mark {user.email} as verified (`email_verified`), so the e-mail "
        "allow-list cannot admit it: an administrator can list the provider in `allowed_issuers` instead"
        if listed
        else f"this account is not on the allow-list (`[{SETTINGS}]` in secrets.toml)"
    )
    raise AccessRefused(
        f"Signed in as {user.email or claims.get('name') or user.subject!s:.120}, but {reason}. Sign out and "
        "sign in with your clinic account, or ask the app's administrator to add you."
    )


def _email(claims: Mapping) -> str | None:
    """The token's e-mail when it is an address the audit trail accepts; a display name or other
    text there is dropped (the subject still names the user), rather than stopping the app."""
    email = claims.get("email")
    try:
        return User("-", email).email if isinstance(email, str) and email else None
    except ValueError:
        return None


def proxy_user(environ: Mapping[str, str], headers: Headers) -> User:
    """The audit user behind the proxy: the value of the header MELANOMA_PROXY_USER_HEADER names
    (which the proxy must set itself, replacing any the browser sent), else PROXY."""
    header = environ.get(PROXY_USER_HEADER_ENV, "").strip()
    if not header:
        return PROXY
    values = _values(headers, header.lower())
    if len(values) != 1 or not values[0].strip():
        raise AccessRefused(
            f"{PROXY_USER_HEADER_ENV} says the proxy names the user in `{header}`, but this request "
            f"carries it {len(values)} time(s){' (empty)' if values and not values[0].strip() else ''}."
            " Expected exactly one, set by the proxy: reach the app through the proxy, and configure "
            "the proxy to set (not append to) that header."
        )
    name = values[0].strip()
    try:
        return User(name, name if "@" in name and " " not in name else None)
    except ValueError as error:
        raise AccessRefused(
            f"The proxy's `{header}` header ({PROXY_USER_HEADER_ENV}) cannot name the user in the audit trail: "
            f"{error}. Expected a user name or e-mail of at most 256 printable characters: configure the proxy "
            "to send the user's name or e-mail there."
        ) from None
