// The rate-limit Durable Object's JavaScript half: storage and the Response, around one wasm
// call that decides (`rateLimiterCheck`, src/driver.rs). js/entry.mjs exports the class as
// `RateLimiter` (the class name in wrangler.toml). Written here rather than with workers-rs's `#[durable_object]`: that
// macro generates a Rust future and a Request/Response conversion for each of the six
// handler kinds (fetch, alarm, WebSocket...) to serve one `fetch`.

/** The class, given the wasm export `check(url, stored)` -> `[decisionJson, nextState]`
 * (undefined for a malformed query). */
export function rateLimiterClass(check) {
  // Storage key of the GCRA state (a decimal string of nanoseconds: past 2^53).
  const STATE_KEY = "gcra";
  return class RateLimiter {
    constructor(state) {
      this.storage = state.storage;
      // The state in memory once read; storage keeps it across evictions.
      this.gcra = undefined;
    }

    async fetch(request) {
      // The input gate holds other events while storage is read, so the read-decide-write
      // below does not interleave with another request's.
      if (this.gcra === undefined) this.gcra = (await this.storage.get(STATE_KEY)) ?? null;
      const answer = check(request.url, this.gcra);
      if (answer === undefined) return new Response("bad rate-limit query", { status: 400 });
      const [decision, next] = answer;
      if (next !== this.gcra) {
        this.gcra = next;
        await this.storage.put(STATE_KEY, next);
      }
      return new Response(decision, { headers: { "content-type": "application/json" } });
    }
  };
}
