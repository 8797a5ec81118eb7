"""Edgeward's edge assertion, verified at a Python origin. Standard library only.

The edge verifies the client's token, strips every inbound ``x-edgeward-*`` header, and adds
one ``x-edgeward-assertion: v2.<key id>.<payload>.<mac>``: base64url JSON of the identity and
the request line it forwarded, and an HMAC-SHA256 over ``v2.<key id>.<payload>`` under the
secret named by the key id. This module checks it the way ``shared::AssertionVerifier`` does,
step for step and reason for reason; ``shared/tests/assertion-vectors.json`` holds both to the
same verdicts (``test_vectors.py``). ``docs/origins.md`` explains each rule.

    verifier = AssertionVerifier({"edge-2026b": secret}, max_age_ms=10_000)
    app = EdgeAuthWSGI(app, verifier)        # or EdgeAuthASGI for an ASGI app
    # handlers read environ["edgeward.identity"] (WSGI) or scope["edgeward.identity"] (ASGI)
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import sys
import time
from typing import Callable, Iterable, Mapping, Optional

ASSERTION_HEADER = "x-edgeward-assertion"
DEFAULT_MAX_AGE_MS = 10_000
# Clock skew tolerated for an assertion dated in the future.
FUTURE_SKEW_MS = 5_000
# The largest token leeway any Edgeward verifier uses: the edge may accept a token until
# exp + this, so the origin judges exp against the signing time, not its own clock.
MAX_TOKEN_LEEWAY_SECS = 300
MAX_ASSERTION_LEN = 8 * 1024
MIN_SECRET_LEN = 32

_KEY_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_BASE64URL = re.compile(r"[A-Za-z0-9_-]*")
# The largest exp and ts: 2^53 - 1, which every JSON reader holds exactly (I-JSON, RFC 7493).
MAX_PAYLOAD_INTEGER = 2**53 - 1
# The deepest nesting of arrays and objects, the payload object being level 1.
MAX_PAYLOAD_DEPTH = 32
# RFC 6749 3.3 scope-tokens, and how many distinct ones a scope may hold.
_SCOPE_TOKEN = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")
MAX_SCOPES = 64
_SURROGATE = re.compile("[\ud800-\udfff]")
# Members every v2 payload has, and their types; host, query, route (the id of the edge
# route that let the request in) and cnf_jkt (the DPoP key the token is bound to, whose proof
# the edge checked) default to "".
_STRINGS = ("sub", "client_id", "scope", "jti", "method", "path")
_INTEGERS = ("exp", "ts")
_OPTIONAL_STRINGS = ("host", "query", "route", "cnf_jkt")


class AssertionRejected(Exception):
    """The request must be refused with 401. ``reason`` is a stable code for logs and
    metrics, the same as the Rust and JS verifiers give."""

    status = 401

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def query_hash(query: Optional[str | bytes]) -> str:
    """The base64url SHA-256 of the query's exact bytes (no query and an empty one alike).
    Give bytes where the server has them (WSGI: ``QUERY_STRING.encode("latin-1")``)."""
    raw = query.encode("utf-8") if isinstance(query, str) else (query or b"")
    digest = hashlib.sha256(raw).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _base64url(text: str) -> bytes:
    """Strict unpadded base64url: the alphabet only, and the one canonical text for the bytes."""
    if not _BASE64URL.fullmatch(text) or len(text) % 4 == 1:
        raise AssertionRejected("malformed_assertion")
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise AssertionRejected("malformed_assertion") from None
    if base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii") != text:
        raise AssertionRejected("malformed_assertion")
    return data


class _Object(list):
    """A JSON object as its (name, value) pairs, so a name given twice can be seen."""


class _NegativeZero:
    """JSON's -0, which is not the integer 0 (the Rust reader takes it as a float)."""


def _int(text):
    """An integer as the edge's reader (serde_json) takes it: past 64 bits it is a double,
    and past a double's range no number at all (serde_json rounds the last digits of a
    309-digit one less exactly, so the two may differ right at the largest double; the edge
    writes no such number)."""
    if text == "-0":
        return _NegativeZero()
    value = int(text)
    return value if -(1 << 63) <= value < (1 << 64) else _float(text)


def _float(text):
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError("number out of range")
    return value


def _no_constants(name):
    raise ValueError(f"{name} is not JSON")


def _sound(value, depth):
    """No lone surrogates in any string, and no nesting past MAX_PAYLOAD_DEPTH."""
    if isinstance(value, str):
        return not _SURROGATE.search(value)
    if isinstance(value, list):  # arrays and _Objects
        if depth > MAX_PAYLOAD_DEPTH:
            return False
        items = (v for pair in value for v in pair) if isinstance(value, _Object) else value
        return all(_sound(item, depth + 1) for item in items)
    return True


def _scope(text):
    """RFC 6749 scope-tokens separated by single spaces, as the sorted distinct set."""
    if text == "":
        return ""
    tokens = text.split(" ")
    if not all(_SCOPE_TOKEN.fullmatch(token) for token in tokens):
        return None
    distinct = sorted(set(tokens))
    return " ".join(distinct) if len(distinct) <= MAX_SCOPES else None


def _payload(data: bytes) -> dict:
    """The identity in a payload the MAC vouched for, or ``malformed_assertion``: one JSON
    object, no member twice, valid UTF-8 without lone surrogates, at most MAX_PAYLOAD_DEPTH
    deep, the known members of their types; unknown members are ignored."""
    try:
        parsed = json.loads(
            data.decode("utf-8"),
            object_pairs_hook=_Object,
            parse_int=_int,
            parse_float=_float,
            parse_constant=_no_constants,
        )
    except (ValueError, RecursionError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise AssertionRejected("malformed_assertion") from None
    if not isinstance(parsed, _Object) or not _sound(parsed, 1):
        raise AssertionRejected("malformed_assertion")
    names = [name for name, _ in parsed]
    if len(names) != len(set(names)):
        raise AssertionRejected("malformed_assertion")
    identity = dict(parsed)
    out = {}
    for name in _STRINGS:
        if not isinstance(identity.get(name), str):
            raise AssertionRejected("malformed_assertion")
        out[name] = identity[name]
    for name in _INTEGERS:
        value = identity.get(name)
        # bool is an int in Python; JSON true is not a number.
        if type(value) is not int or not 0 <= value <= MAX_PAYLOAD_INTEGER:
            raise AssertionRejected("malformed_assertion")
        out[name] = value
    for name in _OPTIONAL_STRINGS:
        value = identity.get(name, "")
        if not isinstance(value, str):
            raise AssertionRejected("malformed_assertion")
        out[name] = value
    out["scope"] = _scope(out["scope"])
    if out["scope"] is None:
        raise AssertionRejected("malformed_assertion")
    return out


class AssertionVerifier:
    """Checks assertions signed by any of ``keys`` ({key id: secret}; the current key, and
    the previous one during a rotation), at most ``max_age_ms`` old, for the origin named
    ``host`` (the authority of the origin URL the edge sends to: a route's origin, else its
    ORIGIN_URL). Without ``host`` the request's Host
    header stands in, which the sender chooses: then an assertion captured on its way to
    another origin with the same key passes here too."""

    def __init__(self, keys: Mapping[str, str | bytes], max_age_ms: int = DEFAULT_MAX_AGE_MS,
                 host: Optional[str] = None):
        self._keys = {}
        for key_id, secret in keys.items():
            secret = secret.encode("utf-8") if isinstance(secret, str) else bytes(secret)
            if not _KEY_ID.fullmatch(key_id):
                raise ValueError("assertion key id must be 1-64 characters of [A-Za-z0-9_-]")
            if len(secret) < MIN_SECRET_LEN:
                raise ValueError(f"assertion secret must be at least {MIN_SECRET_LEN} bytes")
            self._keys[key_id] = secret
        self._max_age_ms = max_age_ms
        self._host = host

    def verify(
        self,
        values: Iterable[str],
        method: str,
        host: str,
        path: str,
        query: Optional[str | bytes],
        now_ms: Optional[int] = None,
    ) -> dict:
        """The identity for a request whose ``x-edgeward-assertion`` values (every one
        received, in order) are ``values``, received as ``method``, ``Host: host`` (unused
        when the verifier has its own host), the raw ``path`` and the raw ``query`` (None
        when there was none), at ``now_ms`` (default: the system clock). Raises
        ``AssertionRejected``."""
        values = list(values)
        if not values:
            raise AssertionRejected("missing_assertion")
        # Frameworks join repeated headers with commas; an assertion never holds one.
        if len(values) > 1 or "," in values[0]:
            raise AssertionRejected("duplicate_assertion")
        header = values[0]
        if len(header.encode("utf-8", "surrogatepass")) > MAX_ASSERTION_LEN:
            raise AssertionRejected("malformed_assertion")
        parts = header.split(".")
        if len(parts) != 4 or parts[0] != "v2":
            raise AssertionRejected("malformed_assertion")
        _, key_id, payload, tag = parts
        secret = self._keys.get(key_id)
        if secret is None:
            raise AssertionRejected("unknown_assertion_key")
        signed = header[: len(header) - len(tag) - 1]
        tag = _base64url(tag)
        expected = hmac.new(secret, signed.encode("utf-8", "surrogatepass"), hashlib.sha256).digest()
        # Constant time: a plain == would tell an attacker how many leading bytes matched.
        if not hmac.compare_digest(expected, tag):
            raise AssertionRejected("bad_assertion_signature")

        identity = _payload(_base64url(payload))
        if identity["method"] != method:
            raise AssertionRejected("assertion_method_mismatch")
        # The path as received: never normalised or decoded first.
        if identity["path"] != path:
            raise AssertionRejected("assertion_path_mismatch")
        # ASCII case only (bytes.lower), as hosts compare.
        host = self._host if self._host is not None else host
        if identity["host"].encode("utf-8").lower() != host.encode("utf-8").lower():
            raise AssertionRejected("assertion_host_mismatch")
        if identity["query"] != query_hash(query):
            raise AssertionRejected("assertion_query_mismatch")
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        if max(now_ms - identity["ts"], 0) > self._max_age_ms or identity["ts"] > now_ms + FUTURE_SKEW_MS:
            raise AssertionRejected("stale_assertion")
        if identity["ts"] // 1000 >= identity["exp"] + MAX_TOKEN_LEEWAY_SECS:
            raise AssertionRejected("expired")
        return identity


def _log(event: dict) -> None:
    """One JSON line on stderr: refusals carry the reason, never the header's value."""
    print(json.dumps(event, separators=(",", ":")), file=sys.stderr, flush=True)


def _refusal_body(reason: str) -> bytes:
    return json.dumps(
        {"error": "invalid_token", "error_description": "edge assertion refused", "reason": reason}
    ).encode("utf-8")


_CHALLENGE = 'Bearer realm="edgeward-origin", error="invalid_token"'
_NO_RAW = "the server gives no raw request path; the assertion binds the path as sent"


def _misconfigured(start_response):
    """An ops error, not the client's: 500, and a log line that says what to fix."""
    _log({"event": "origin_misconfigured", "detail": _NO_RAW})
    start_response("500 Internal Server Error", [("Content-Length", "0")])
    return [b""]


class EdgeAuthWSGI:
    """WSGI middleware: only requests with a valid assertion reach ``app``, with the identity
    in ``environ["edgeward.identity"]``; others get 401 (RFC 6750 body and challenge).

    The path must be the raw one the edge signed. ``PATH_INFO`` is percent-decoded, so this
    reads ``REQUEST_URI`` (uWSGI, ``server.py``) or ``RAW_URI`` (gunicorn), and answers 500
    with a log line when the server gives neither: a decoded path would let ``/a%2Fb`` and
    ``/a/b`` pass for each other."""

    def __init__(self, app: Callable, verifier: AssertionVerifier, clock: Callable[[], int] | None = None):
        self._app = app
        self._verifier = verifier
        self._clock = clock

    def __call__(self, environ, start_response):
        raw = environ.get("REQUEST_URI") or environ.get("RAW_URI")
        value = environ.get("HTTP_X_EDGEWARD_ASSERTION")
        method = environ.get("REQUEST_METHOD", "")
        if raw is None:
            return _misconfigured(start_response)
        try:
            path, _, query = raw.partition("?")
            # WSGI strings are the request's bytes read as latin-1: hash those bytes.
            query = query.encode("latin-1")
            identity = self._verifier.verify(
                [] if value is None else [value],
                method,
                environ.get("HTTP_HOST", ""),
                path,
                query,
                self._clock() if self._clock else None,
            )
        except AssertionRejected as rejected:
            _log({"event": "assertion_refused", "reason": rejected.reason, "method": method,
                  "path": environ.get("PATH_INFO", "")})
            body = _refusal_body(rejected.reason)
            start_response(
                "401 Unauthorized",
                [("Content-Type", "application/json"), ("WWW-Authenticate", _CHALLENGE),
                 ("Content-Length", str(len(body)))],
            )
            return [body]
        environ["edgeward.identity"] = identity
        return self._app(environ, start_response)


class EdgeAuthASGI:
    """ASGI middleware (Starlette, FastAPI, Django's ASGI...): the same check on HTTP
    requests, from the scope's raw path, raw query and every header value; the identity in
    ``scope["edgeward.identity"]``."""

    def __init__(self, app: Callable, verifier: AssertionVerifier, clock: Callable[[], int] | None = None):
        self._app = app
        self._verifier = verifier
        self._clock = clock

    async def __call__(self, scope, receive, send):
        if scope["type"] == "lifespan":
            return await self._app(scope, receive, send)
        if scope["type"] != "http":
            # The edge forwards no WebSocket (it drops `Upgrade`), so one here came around it:
            # refused before the handshake (the server answers 403), as any other kind.
            _log({"event": "assertion_refused", "reason": "not_through_the_edge",
                  "type": scope["type"], "path": scope.get("path", "")})
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
            return
        headers = scope.get("headers", [])
        values = [v.decode("latin-1") for k, v in headers if k.lower() == ASSERTION_HEADER.encode()]
        hosts = [v.decode("latin-1") for k, v in headers if k.lower() == b"host"]
        raw_path = scope.get("raw_path")
        path = raw_path.decode("latin-1") if raw_path is not None else None
        if path is None:
            _log({"event": "origin_misconfigured", "detail": _NO_RAW})
            await send({"type": "http.response.start", "status": 500, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        try:
            query = scope.get("query_string", b"")
            identity = self._verifier.verify(
                values, scope["method"], hosts[0] if len(hosts) == 1 else "", path, query,
                self._clock() if self._clock else None,
            )
        except AssertionRejected as rejected:
            _log({"event": "assertion_refused", "reason": rejected.reason, "method": scope["method"],
                  "path": scope.get("path", "")})
            body = _refusal_body(rejected.reason)
            await send({"type": "http.response.start", "status": 401, "headers": [
                (b"content-type", b"application/json"),
                (b"www-authenticate", _CHALLENGE.encode()),
                (b"content-length", str(len(body)).encode()),
            ]})
            await send({"type": "http.response.body", "body": body})
            return
        scope = dict(scope, **{"edgeward.identity": identity})
        return await self._app(scope, receive, send)
