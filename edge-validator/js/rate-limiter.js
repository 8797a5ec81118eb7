// The rate-limit Durable Object's JavaScript half: storage around one wasm call that decides
// (`rateLimiterAnswer`, src/driver.rs): a decision per request (`durable` mode) or a lease of
// permits (`lease` mode). The same class keeps DPoP proofs seen (`/dpop`,
// src/isolate/proofs.rs), in objects of their own (`dpop/<thumbprint>`). js/entry.mjs exports
// the class as `RateLimiter` (the class name in wrangler.toml). Written here rather than with
// workers-rs's `#[durable_object]`: that macro generates a Rust future and a Request/Response
// conversion for each of the six handler kinds (fetch, alarm, WebSocket...) to serve one
// `fetch`.
//
// An object answers the same query two ways: `fetch(url)`, which every edge so far sends, and
// the RPC method `ask(url)`, which costs less CPU per call (benches/object-call). A canary
// runs two releases at once and each object runs one of them, so an edge may only ask by RPC
// once every object answers it: this release's objects answer both, and a later edge can
// switch. Only `ask` is callable by RPC (`fetch` and `alarm` are reserved names); the other
// methods are private.
import { DurableObject } from "cloudflare:workers";

/** Calls answered by every object of this isolate, for benchmarks (`callsServed`). */
let served = 0;

/** How many calls the objects of this isolate have answered (benches/run reads it through
 * the Worker's `BENCH_LIMITER_CALLS_PATH`, to print Durable Object calls per request). */
export function callsServed() {
  return served;
}

/** The class, given the wasm exports `answer(url, stored, book)` -> `[answerJson, nextState,
 * nextBook]` and `replayEntries(url)` -> the proofs' storage keys, one space between two
 * (each undefined for a malformed query). */
export function rateLimiterClass(answer, replayEntries) {
  // Storage key of the GCRA state (a decimal string of nanoseconds: past 2^53).
  const STATE_KEY = "gcra";
  // A proof's entry key: its last second, zero-padded to this many digits, then its replay key
  // (src/isolate/proofs.rs). Entries are forgotten in batches this large, this long after
  // their last second.
  const UNTIL_DIGITS = 12;
  const PRUNE_BATCH = 128;
  const PRUNE_MARGIN_MS = 5_000;
  return class RateLimiter extends DurableObject {
    constructor(ctx, env) {
      super(ctx, env);
      this.storage = ctx.storage;
      // The state in memory once read; storage keeps it across evictions.
      this.gcra = undefined;
      // The leases not yet returned (`shared::lease::LeaseBook` as text): memory only, so
      // an evicted object refuses its earlier leases' refunds (the strict side).
      this.book = null;
      // Whether an alarm will forget this DPoP object's entries (read from storage once).
      this.alarmSet = false;
    }

    /** The answer to `request.url` (`ask`'s) as a Response: JSON for a limiter query, the
     * verdicts as text for a DPoP call, 400 for a query this class does not know. */
    async fetch(request) {
      const body = await this.ask(request.url);
      if (request.url.includes("/dpop?")) {
        return body === undefined ? new Response("bad replay query", { status: 400 }) : new Response(body);
      }
      if (body === undefined) return new Response("bad rate-limit query", { status: 400 });
      return new Response(body, { headers: { "content-type": "application/json" } });
    }

    /** The answer to the query `url`: a decision or a lease as JSON, or a DPoP call's
     * verdicts (`#replay`); `undefined` for a query this class does not know. */
    async ask(url) {
      served++;
      if (url.includes("/dpop?")) return this.#replay(url);
      // The input gate holds other events while storage is read, so the read-decide-write
      // below does not interleave with another request's.
      if (this.gcra === undefined) this.gcra = (await this.storage.get(STATE_KEY)) ?? null;
      const answered = answer(url, this.gcra, this.book);
      if (answered === undefined) return undefined;
      const [body, next, book] = answered;
      this.book = book;
      if (next !== this.gcra) {
        this.gcra = next;
        await this.storage.put(STATE_KEY, next);
      }
      return body;
    }

    /** Whether each DPoP proof of a call (an isolate's proofs for this key, up to 64) is
     * seen for the first time: `1` or `0` each, in order. Their entries are read and the new
     * ones written with no other request between the two (the input gate); of two equal
     * proofs in one call, the first is the fresh one. Entries are durable: an object evicted
     * and started again still knows the proofs of the window. A proof whose last second has
     * passed on this object's clock is answered "seen" whatever the storage holds: its entry
     * may already be pruned, and the edge judged its age a moment earlier. */
    async #replay(url) {
      const entries = replayEntries(url)?.split(" ");
      if (entries === undefined) return undefined;
      const now = Date.now();
      // The edge accepts a proof up to the end of its last second.
      const live = (entry) => Number(entry.slice(0, UNTIL_DIGITS)) * 1000 + 1000 > now;
      const looked = entries.filter(live);
      const stored = looked.length > 0 ? await this.storage.get(looked) : new Map();
      const written = {};
      let verdicts = "";
      let earliest = Infinity;
      for (const entry of entries) {
        const fresh = live(entry) && !stored.has(entry) && !(entry in written);
        if (fresh) {
          written[entry] = 1;
          earliest = Math.min(earliest, Number(entry.slice(0, UNTIL_DIGITS)) * 1000);
        }
        verdicts += fresh ? "1" : "0";
      }
      if (earliest !== Infinity) {
        await this.storage.put(written);
        if (!this.alarmSet) await this.#pruneLater(earliest);
      }
      return verdicts;
    }

    /** Makes sure an alarm will forget the entries, busy or idle: one set already (this
     * object's, or one from before it was evicted), or one for `untilMs`. A failure is
     * logged, never the request's: the entries then go at the next alarm. */
    async #pruneLater(untilMs) {
      try {
        if ((await this.storage.getAlarm()) === null) await this.storage.setAlarm(untilMs + PRUNE_MARGIN_MS);
        this.alarmSet = true;
      } catch (error) {
        console.warn(JSON.stringify({ event: "dpop_prune_alarm_failed", reason: String(error) }));
      }
    }

    /** Forgets every proof past its last second (with a margin: keys sort by that second),
     * then wakes again for the earliest one left. */
    async alarm() {
      const end = String(Math.floor((Date.now() - PRUNE_MARGIN_MS) / 1000)).padStart(UNTIL_DIGITS, "0");
      for (;;) {
        const old = await this.storage.list({ end, limit: PRUNE_BATCH });
        if (old.size > 0) await this.storage.delete([...old.keys()]);
        if (old.size < PRUNE_BATCH) break;
      }
      // The earliest entry left, if any (GCRA state, `gcra`, sorts after every digit).
      const [next] = (await this.storage.list({ end: "a", limit: 1 })).keys();
      this.alarmSet = next !== undefined;
      if (next !== undefined) {
        await this.storage.setAlarm(Number(next.slice(0, UNTIL_DIGITS)) * 1000 + PRUNE_MARGIN_MS);
      }
    }
  };
}
