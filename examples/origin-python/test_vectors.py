"""The conformance vectors (shared/tests/assertion-vectors.json) against the Python
verifier, and its two middlewares on one request each way. Run from the repository root:
python3 -m unittest discover -s examples/origin-python"""

import asyncio
import io
import json
import pathlib
import unittest

from edgeward_origin import AssertionRejected, AssertionVerifier, EdgeAuthASGI, EdgeAuthWSGI

VECTORS = json.loads(
    (pathlib.Path(__file__).resolve().parents[2] / "shared/tests/assertion-vectors.json").read_text("utf-8")
)


def verifier(host=None):
    return AssertionVerifier({k["id"]: k["secret"] for k in VECTORS["keys"]}, VECTORS["max_age_ms"], host)


def vector(name):
    return next(v for v in VECTORS["vectors"] if v["name"] == name)


class Vectors(unittest.TestCase):
    def test_every_vector_gets_its_verdict_and_reason(self):
        for v in VECTORS["vectors"]:
            check = verifier(v.get("origin_host"))
            with self.subTest(v["name"]):
                r = v["request"]
                try:
                    got = {"verdict": "accept",
                           "identity": check.verify(v["headers"], r["method"], r["host"], r["path"], r["query"], v["now_ms"])}
                except AssertionRejected as rejected:
                    got = {"verdict": "reject", "reason": rejected.reason}
                self.assertEqual(got, v["expect"])

    def test_bad_keys_fail_at_construction(self):
        with self.assertRaises(ValueError):
            AssertionVerifier({"k": "short"})
        with self.assertRaises(ValueError):
            AssertionVerifier({"bad id": "x" * 32})


def wsgi_call(app, environ):
    seen = {}

    def start_response(status, headers):
        seen["status"], seen["headers"] = status, dict(headers)

    body = b"".join(app(environ, start_response))
    return seen["status"], seen["headers"], body


class Middleware(unittest.TestCase):
    def setUp(self):
        self.good = vector("good")
        self.clock = lambda: self.good["now_ms"]

    def environ(self, **extra):
        r = self.good["request"]
        environ = {"REQUEST_METHOD": r["method"], "HTTP_HOST": r["host"], "PATH_INFO": r["path"],
                   "REQUEST_URI": r["path"], "HTTP_X_EDGEWARD_ASSERTION": self.good["headers"][0],
                   "wsgi.errors": io.StringIO()}
        environ.update(extra)
        return environ

    def test_wsgi_admits_a_good_request_with_its_identity(self):
        app = EdgeAuthWSGI(lambda environ, start: (start("200 OK", []), [json.dumps(environ["edgeward.identity"]).encode()])[1],
                           verifier(), self.clock)
        status, _, body = wsgi_call(app, self.environ())
        self.assertEqual(status, "200 OK")
        self.assertEqual(json.loads(body), self.good["expect"]["identity"])

    def test_wsgi_refuses_another_path_with_rfc6750(self):
        app = EdgeAuthWSGI(lambda environ, start: self.fail("reached the app"), verifier(), self.clock)
        status, headers, body = wsgi_call(app, self.environ(REQUEST_URI="/orders/18", PATH_INFO="/orders/18"))
        self.assertEqual(status, "401 Unauthorized")
        self.assertIn('error="invalid_token"', headers["WWW-Authenticate"])
        self.assertEqual(json.loads(body)["reason"], "assertion_path_mismatch")

    def test_wsgi_without_a_raw_uri_is_an_ops_error(self):
        environ = self.environ()
        del environ["REQUEST_URI"]
        status, _, _ = wsgi_call(EdgeAuthWSGI(lambda e, s: self.fail("reached the app"), verifier()), environ)
        self.assertEqual(status, "500 Internal Server Error")

    def test_asgi_admits_a_good_request_and_refuses_a_duplicate(self):
        async def inner(scope, receive, send):
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": json.dumps(scope["edgeward.identity"]).encode()})

        app = EdgeAuthASGI(inner, verifier(), self.clock)
        r, header = self.good["request"], self.good["headers"][0].encode()

        async def call(headers):
            sent = []
            scope = {"type": "http", "method": r["method"], "path": r["path"], "raw_path": r["path"].encode(),
                     "query_string": b"", "headers": [(b"host", r["host"].encode())] + headers}

            async def send(message):
                sent.append(message)

            await app(scope, None, send)
            return sent[0]["status"], sent[1]["body"]

        status, body = asyncio.run(call([(b"x-edgeward-assertion", header)]))
        self.assertEqual((status, json.loads(body)), (200, self.good["expect"]["identity"]))
        status, body = asyncio.run(call([(b"x-edgeward-assertion", header)] * 2))
        self.assertEqual((status, json.loads(body)["reason"]), (401, "duplicate_assertion"))

    def test_asgi_refuses_a_websocket_which_never_comes_through_the_edge(self):
        async def inner(scope, receive, send):
            self.fail(f"reached the app with {scope['type']}")

        app = EdgeAuthASGI(inner, verifier(), self.clock)
        r, header = self.good["request"], self.good["headers"][0].encode()
        sent = []

        async def send(message):
            sent.append(message)

        # Even with a good assertion for its path: the edge never forwards one.
        scope = {"type": "websocket", "path": r["path"], "raw_path": r["path"].encode(),
                 "query_string": b"", "headers": [(b"host", r["host"].encode()),
                                                  (b"x-edgeward-assertion", header)]}
        asyncio.run(app(scope, None, send))
        self.assertEqual(sent, [{"type": "websocket.close", "code": 1008}])

        # The server's own lifespan events still reach the app.
        seen = []

        async def lifespan(scope, receive, send):
            seen.append(scope["type"])

        asyncio.run(EdgeAuthASGI(lifespan, verifier())({"type": "lifespan"}, None, send))
        self.assertEqual(seen, ["lifespan"])


class Settings(unittest.TestCase):
    def test_a_previous_key_under_the_current_id_is_refused_at_start(self):
        from unittest import mock

        import server

        secret = "s" * 32
        both = {"ASSERTION_KEY_ID": "k1", "ASSERTION_SECRET": secret,
                "ASSERTION_PREVIOUS_KEY_ID": "k0", "ASSERTION_PREVIOUS_SECRET": "p" * 32}
        with mock.patch.dict("os.environ", both, clear=True):
            self.assertEqual(server.keys_from_env(), {"k1": secret, "k0": "p" * 32})
        with mock.patch.dict("os.environ", dict(both, ASSERTION_PREVIOUS_KEY_ID="k1"), clear=True):
            with self.assertRaisesRegex(ValueError, "must differ"):
                server.keys_from_env()


if __name__ == "__main__":
    unittest.main()
