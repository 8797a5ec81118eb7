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
 * nextBook]` and `replayEntries(url)` -> the proofs as `<until>:<id>` (two integers: the
 * proof's last second and its replay key's first 48 bits), one space between two (each
 * undefined for a malformed query). */
export function rateLimiterClass(answer, replayEntries) {
  // Storage key of the GCRA state (a decimal string of nanoseconds: past 2^53).
  const STATE_KEY = "gcra";
  // Storage key of a DPoP object's floor: the highest `until` of any proof it accepted.
  const FLOOR_KEY = "dpop-floor";
  // Most proofs a DPoP object keeps in memory (a number each in a set); past it, it forgets
  // whole seconds' proofs, oldest first, until at most half are left, and raises its floor
  // over them.
  const MEMORY_PROOFS = 50_000;
  // A proof's last second further ahead of this object's clock than this is no edge's (an
  // edge sends its `iat` plus at most 310 s): refused, and never written as the floor, which
  // only rises.
  const FUTURE_SECS = 3_600;
  return class RateLimiter extends DurableObject {
    constructor(ctx, env) {
      super(ctx, env);
      this.storage = ctx.storage;
      // The state in memory once read; storage keeps it across evictions.
      this.gcra = undefined;
      // The leases not yet returned (`shared::lease::LeaseBook` as text): memory only, so
      // an evicted object refuses its earlier leases' refunds (the strict side).
      this.book = null;
      // A DPoP object's judgement (`#replay`): the proofs it accepted that are still within
      // their last second, by that second (`until` -> Set of ids), and how many.
      this.proofs = new Map();
      this.remembered = 0;
      // Proofs whose `until` is at most this may have been accepted out of its memory's
      // sight: before this object started (storage's floor, read once), or before a trim.
      this.floor = undefined;
      // The floor as storage holds it: every proof this object answered "fresh" is at or
      // under it. And the read of it, once, and the highest floor a write was begun for.
      this.stored = 0;
      this.reading = undefined;
      this.writing = 0;
      // When the proofs past their last second were last forgotten (ms).
      this.swept = 0;
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
     * seen for the first time, one character each, in order: `1` first use; `0` used before,
     * or past its last second on this object's clock (its replay may come after the
     * object forgot it, and the edge judged its age a moment earlier), or with a last second
     * no edge sends (over `FUTURE_SECS` ahead); `2` undecided: at or
     * under the floor and not in memory, so it may have been accepted before this object
     * started or trimmed its memory (the edge answers 503 with `Retry-After`: a new proof,
     * made a second later, is above the floor). Of two equal proofs in one call, the first
     * is the fresh one.
     *
     * Exact across restarts with one storage write per new highest second, not one per
     * proof: the floor is written before any proof above it is answered "fresh" (the answer
     * waits for the write), so every proof accepted before a restart is at or under the
     * floor the next start reads. Calls do not interleave (the input gate holds other
     * events while storage is read or written), and were they to, the floor read once is
     * shared and a write never lowers what another wrote. */
    async #replay(url) {
      const entries = replayEntries(url)?.split(" ");
      if (entries === undefined) return undefined;
      if (this.floor === undefined) await this.#readFloor();
      const now = Date.now();
      this.#forget(now, entries.length);
      let verdicts = "";
      let highest = this.stored;
      for (const entry of entries) {
        const colon = entry.indexOf(":");
        const until = Number(entry.slice(0, colon));
        const id = Number(entry.slice(colon + 1));
        const seen = this.proofs.get(until);
        if (until * 1000 + 1000 <= now || until * 1000 > now + FUTURE_SECS * 1000 || seen?.has(id)) {
          verdicts += "0";
        } else if (until <= this.floor) {
          verdicts += "2";
        } else {
          if (seen === undefined) this.proofs.set(until, new Set([id]));
          else seen.add(id);
          this.remembered += 1;
          highest = Math.max(highest, until);
          verdicts += "1";
        }
      }
      if (highest > this.stored) {
        this.writing = Math.max(this.writing, highest);
        const floor = this.writing;
        await this.storage.put(FLOOR_KEY, floor);
        this.stored = Math.max(this.stored, floor);
      }
      return verdicts;
    }

    /** Reads the floor storage holds, once however many calls wait for it (a failed read is
     * tried again by the next call). */
    async #readFloor() {
      this.reading ??= this.storage.get(FLOOR_KEY);
      let stored;
      try {
        stored = (await this.reading) ?? 0;
      } catch (error) {
        this.reading = undefined;
        throw error;
      }
      if (this.floor === undefined) {
        this.stored = stored;
        this.floor = stored;
      }
    }

    /** Forgets the proofs past their last second (at most once a second), then, if `more`
     * would take memory over `MEMORY_PROOFS`, whole seconds' proofs, oldest first, until at
     * most half are left, raising the floor over them. */
    #forget(now, more) {
      if (now - this.swept >= 1000) {
        this.swept = now;
        for (const [until, seen] of this.proofs) {
          if (until * 1000 + 1000 <= now) {
            this.proofs.delete(until);
            this.remembered -= seen.size;
            // Under the floor too: should the clock step back, they are undecided, not new.
            this.floor = Math.max(this.floor, until);
          }
        }
      }
      if (this.remembered + more <= MEMORY_PROOFS) return;
      for (const until of [...this.proofs.keys()].sort((a, b) => a - b)) {
        if (this.remembered + more <= MEMORY_PROOFS / 2) break;
        this.remembered -= this.proofs.get(until).size;
        this.proofs.delete(until);
        this.floor = Math.max(this.floor, until);
      }
    }
  };
}
