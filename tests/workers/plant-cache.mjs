// Another script on the same zone (the Cache API is per zone, not per Worker): it writes
// whatever it is sent into caches.default, as an attacker's Worker would. Used by
// tests/tests/edge_validator.rs to plant a key set under the edge's cache key.
export default {
  async fetch(request) {
    if (request.method !== "POST") return new Response("ready");
    const { key, body, headers } = await request.json();
    await caches.default.put(key, new Response(body, { headers }));
    return new Response("planted");
  },
};
