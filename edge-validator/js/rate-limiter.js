// The rate-limit Durable Object's JavaScript half: storage and the Response, around one wasm
// call that decides (`rateLimiterAnswer`, src/driver.rs): a decision per request (`durable`
// mode) or a lease of permits (`lease` mode). The same class keeps DPoP proofs seen
// (`/dpop`, src/isolate/proofs.rs), in objects of their own (`dpop/<thumbprint>`). js/entry.mjs exports the class as
// `RateLimiter` (the class name in wrangler.toml). Written here rather than with workers-rs's
// `#[durable_object]`: that macro generates a Rust future and a Request/Response conversion
// for each of the six handler kinds (fetch, alarm, WebSocket...) to serve one `fetch`.

/** Calls answered by every object of this isolate, for benchmarks (`callsServed`). */
let served = 0;

/** How many calls the objects of this isolate have answered (benches/run reads it through
 * the Worker's `BENCH_LIMITER_CALLS_PATH`, to print Durable Object calls per request). */
export function callsServed() {
  return served;
}

/** The class, given the wasm exports `answer(url, stored, book)` -> `[answerJson, nextState,
 * nextBook]` and `replayEntry(url)` -> a proof's storage key (each undefined for a malformed
 * query). */
export function rateLimiterClass(answer, replayEntry) {
  // Storage key of the GCRA state (a decimal string of nanoseconds: past 2^53).
  const STATE_KEY = "gcra";
  // How often an object forgets proofs past their window, in ms, and how many at a time.
  const PRUNE_EVERY_MS = 10_000;
  const PRUNE_BATCH = 128;
  return class RateLimiter {
    constructor(state) {
      this.storage = state.storage;
      // The state in memory once read; storage keeps it across evictions.
      this.gcra = undefined;
      // The leases not yet returned (`shared::lease::LeaseBook` as text): memory only, so
      // an evicted object refuses its earlier leases' refunds (the strict side).
      this.book = null;
    }

    async fetch(request) {
      served++;
      if (request.url.includes("/dpop?")) return this.replay(request.url);
      // The input gate holds other events while storage is read, so the read-decide-write
      // below does not interleave with another request's.
      if (this.gcra === undefined) this.gcra = (await this.storage.get(STATE_KEY)) ?? null;
      const answered = answer(request.url, this.gcra, this.book);
      if (answered === undefined) return new Response("bad rate-limit query", { status: 400 });
      const [body, next, book] = answered;
      this.book = book;
      if (next !== this.gcra) {
        this.gcra = next;
        await this.storage.put(STATE_KEY, next);
      }
      return new Response(body, { headers: { "content-type": "application/json" } });
    }

    /** Whether a DPoP proof is seen for the first time: its entry is read and, if absent,
     * written, with no other request between the two (the input gate). Entries are durable:
     * an object evicted and started again still knows the proofs of the window. */
    async replay(url) {
      const entry = replayEntry(url);
      if (entry === undefined) return new Response("bad replay query", { status: 400 });
      const fresh = (await this.storage.get(entry)) === undefined;
      if (fresh) await this.storage.put(entry, 1);
      await this.prune();
      return new Response(JSON.stringify({ fresh }), { headers: { "content-type": "application/json" } });
    }

    /** Forgets proofs whose last second has passed (keys sort by it), now and then. */
    async prune() {
      const now = Date.now();
      if (now - (this.pruned ?? 0) < PRUNE_EVERY_MS) return;
      this.pruned = now;
      const end = String(Math.floor(now / 1000)).padStart(12, "0");
      const old = await this.storage.list({ end, limit: PRUNE_BATCH });
      if (old.size > 0) await this.storage.delete([...old.keys()]);
    }
  };
}
