// The JavaScript floor for benches/run: forward method, path, query and headers to the
// origin (Authorization and Host dropped), no token work.
export default {
  async fetch(request, env) {
    const url = new URL(request.url);
    const headers = new Headers(request.headers);
    headers.delete("authorization");
    headers.delete("host");
    return fetch(env.ORIGIN_URL + url.pathname + url.search, {
      method: request.method,
      headers,
      body: request.body,
    });
  },
};
