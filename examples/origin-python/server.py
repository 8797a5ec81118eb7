"""The demo origin in Python (standard library only): what ``demo-origin/`` does in Rust.
``/healthz`` answers anyone; every other path needs the edge's assertion and answers with
the verified identity and request as JSON, in demo-origin's shape.

Settings (environment, as demo-origin): DEMO_ORIGIN_LISTEN (host:port, default
127.0.0.1:9090; port 0 picks one), ORIGIN_HOST (this origin's name as the edge's ORIGIN_URL
gives it; without it the request's Host header stands in), ASSERTION_KEY_ID and
ASSERTION_SECRET, and during a key rotation ASSERTION_PREVIOUS_KEY_ID and
ASSERTION_PREVIOUS_SECRET. On start it prints one JSON
line on stdout, {"event": "listening", "port": N}, for scripts and tests to read.
"""

import json
import os
import sys
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from edgeward_origin import AssertionVerifier, EdgeAuthWSGI


class RawURIHandler(WSGIRequestHandler):
    """wsgiref's handler, plus REQUEST_URI (the request target as sent, as uWSGI gives it):
    wsgiref only gives PATH_INFO, percent-decoded."""

    def get_environ(self):
        environ = super().get_environ()
        # The target from the request line itself: http.server rewrites self.path (it
        # collapses leading slashes), and the assertion binds the path as sent.
        parts = self.requestline.split(" ")
        environ["REQUEST_URI"] = parts[1] if len(parts) >= 2 else self.path
        return environ

    def log_message(self, format, *args):  # noqa: A002 (the base class's name)
        pass  # refusals are logged as JSON by the middleware; no access log


class ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


def identity_app(environ, start_response):
    """demo-origin's answer: who called, and the request the edge vouched for."""
    identity = environ["edgeward.identity"]
    body = json.dumps({
        "message": "hello from the python demo origin",
        "identity": {key: identity[key] for key in ("sub", "client_id", "scope")},
        "request": {"method": identity["method"], "path": identity["path"],
                    "query": environ.get("QUERY_STRING") or None},
    }).encode("utf-8")
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


def app(verifier):
    protected = EdgeAuthWSGI(identity_app, verifier)

    def route(environ, start_response):
        if environ.get("PATH_INFO") == "/healthz":
            start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
            return [b"ok"]
        return protected(environ, start_response)

    return route


def keys_from_env():
    keys = {}
    for id_var, secret_var in (("ASSERTION_KEY_ID", "ASSERTION_SECRET"),
                               ("ASSERTION_PREVIOUS_KEY_ID", "ASSERTION_PREVIOUS_SECRET")):
        key_id, secret = os.environ.get(id_var, "").strip(), os.environ.get(secret_var, "")
        if bool(key_id) != bool(secret):
            raise ValueError(f"set both {id_var} and {secret_var}, or neither")
        if key_id in keys:
            raise ValueError(f"{id_var} must differ from ASSERTION_KEY_ID")
        if key_id:
            keys[key_id] = secret
    if not keys:
        raise ValueError("set ASSERTION_KEY_ID and ASSERTION_SECRET")
    return keys


def main():
    try:
        verifier = AssertionVerifier(keys_from_env(), host=os.environ.get("ORIGIN_HOST") or None)
        host, _, port = os.environ.get("DEMO_ORIGIN_LISTEN", "127.0.0.1:9090").rpartition(":")
        server = make_server(host, int(port), app(verifier), server_class=ThreadingServer,
                             handler_class=RawURIHandler)
    except (ValueError, OSError) as error:
        print(f"demo origin (python): {error}", file=sys.stderr)
        return 2
    if not os.environ.get("ORIGIN_HOST"):
        # The Host header then stands in, and the sender chooses it (docs/origins.md).
        print(json.dumps({"event": "origin_host_unset", "detail": "set ORIGIN_HOST to this origin's name"}),
              file=sys.stderr, flush=True)
    print(json.dumps({"event": "listening", "port": server.server_port}), flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
