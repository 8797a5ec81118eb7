// The benchmark's origin (its own workerd process, so its CPU is not counted against the
// worker under test): a small JSON answer, and the fixture JWKS at /jwks.
export default {
  async fetch(request, env) {
    const url = new URL(request.url);
    if (url.pathname === "/jwks") {
      return new Response(env.JWKS_JSON, {
        headers: { "content-type": "application/json", "cache-control": "max-age=3600" },
      });
    }
    return new Response('{"ok":true}', { headers: { "content-type": "application/json" } });
  },
};
