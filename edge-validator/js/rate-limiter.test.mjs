// Unit tests of the replay judgement in js/rate-limiter.js, under Node (`node --test
// edge-validator/js/`, run by tests/run) with an injected clock and a storage stand-in; the
// workerd tests (tests/tests/dpop_interop.rs) run the same class on the real runtime. Node
// has no `cloudflare:workers`, so a loader hook hands the module an empty DurableObject.
import { register } from "node:module";
import { test } from "node:test";
import assert from "node:assert/strict";

const stub = "export class DurableObject { constructor(ctx, env) { this.ctx = ctx; this.env = env; } }";
const hook = `export async function resolve(specifier, context, next) {
  if (specifier === "cloudflare:workers") {
    return { url: "data:text/javascript," + encodeURIComponent(${JSON.stringify(stub)}), shortCircuit: true };
  }
  return next(specifier, context);
}`;
register("data:text/javascript," + encodeURIComponent(hook));
const { rateLimiterClass } = await import("./rate-limiter.js");

// The wasm's `replayEntries` is the identity here: a query is its entries (`<until>:<id>`).
const RateLimiter = rateLimiterClass(
  () => undefined,
  (url) => url.split("/dpop?")[1],
);

/** Durable storage as the object sees it; `writes` counts puts, `failing` makes them throw,
 * and `held` keeps each operation waiting until the test lets it go (`release`). */
class Storage {
  constructor() {
    this.map = new Map();
    this.writes = 0;
    this.reads = 0;
    this.failing = false;
    this.held = null;
  }
  async #turn() {
    if (this.held !== null) await new Promise((go) => this.held.push(go));
  }
  /** Lets the operations waiting go, in `order` (positions in the order they began); the
   * next ones wait again. */
  release(order) {
    const waiting = this.held;
    this.held = [];
    for (const at of order) waiting[at]();
  }
  async get(key) {
    this.reads += 1;
    if (this.failing) throw new Error("storage unavailable");
    await this.#turn();
    return this.map.get(key);
  }
  async put(key, value) {
    if (this.failing) throw new Error("storage unavailable");
    await this.#turn();
    this.writes += 1;
    this.map.set(key, value);
  }
}

// Seconds since the epoch at the tests' start, and the clock the object reads.
const T = 1_800_000_000;
let nowMs = T * 1000;
Date.now = () => nowMs;

/** A new object on `storage` (a new one by default), the clock set to `T`. */
function started(storage = new Storage()) {
  nowMs = T * 1000;
  return new RateLimiter({ storage }, {});
}

/** A call's verdicts for the proofs `entries` (each `[until, id]`). */
function ask(object, ...entries) {
  return object.ask("https://rate-limiter.internal/dpop?" + entries.map(([until, id]) => `${until}:${id}`).join(" "));
}

test("a proof is fresh once; the second of two equal proofs in a call is the replay", async () => {
  const object = started();
  assert.equal(await ask(object, [T + 65, 1], [T + 65, 2], [T + 65, 1]), "110");
  assert.equal(await ask(object, [T + 65, 2], [T + 66, 2]), "01");
});

test("a proof past its last second is seen, whatever the memory holds", async () => {
  const object = started();
  assert.equal(await ask(object, [T - 1, 1]), "0");
  // The last second itself is still live: the edge accepts a proof to its end.
  nowMs = T * 1000 + 999;
  assert.equal(await ask(object, [T, 2]), "1");
  nowMs = T * 1000 + 1000;
  assert.equal(await ask(object, [T, 3]), "0");
});

test("storage is written once per new highest second, not once per proof", async () => {
  const storage = new Storage();
  const object = started(storage);
  for (let id = 0; id < 50; id += 1) assert.equal(await ask(object, [T + 65, id]), "1");
  assert.equal(storage.writes, 1);
  assert.equal(await ask(object, [T + 64, 99]), "1", "an earlier second, above the floor");
  assert.equal(storage.writes, 1);
  assert.equal(await ask(object, [T + 66, 0]), "1");
  assert.equal(storage.writes, 2);
  assert.equal(storage.map.get("dpop-floor"), T + 66);
  // The floor is the call's highest, wherever in the call it comes.
  assert.equal(await ask(object, [T + 68, 1], [T + 67, 1]), "11");
  assert.equal(storage.map.get("dpop-floor"), T + 68);
});

test("after a restart, what may have been accepted is undecided and what is newer is judged", async () => {
  nowMs = T * 1000;
  const storage = new Storage();
  const before = new RateLimiter({ storage }, {});
  assert.equal(await ask(before, [T + 65, 1]), "1");
  // The same storage, a new object (evicted, or a deploy): its memory is empty.
  const after = new RateLimiter({ storage }, {});
  // The accepted proof, and one of the same second it never saw: it cannot tell them apart.
  assert.equal(await ask(after, [T + 65, 1], [T + 65, 2], [T + 64, 3]), "222");
  // The client's next proof, a second later, is above the floor: fresh, then a replay.
  assert.equal(await ask(after, [T + 66, 4]), "1");
  assert.equal(await ask(after, [T + 66, 4]), "0");
  // A call whose newest proof is not its last: both are under the floor after a restart.
  assert.equal(await ask(after, [T + 70, 5], [T + 67, 6]), "11");
  const again = new RateLimiter({ storage }, {});
  assert.equal(await ask(again, [T + 70, 5], [T + 67, 6]), "22");
});

test("calls that interleave at storage share one read of the floor and never lower it", async () => {
  nowMs = T * 1000;
  const storage = new Storage();
  storage.map.set("dpop-floor", T + 60);
  storage.held = [];
  const object = new RateLimiter({ storage }, {});
  const first = ask(object, [T + 70, 1]);
  const second = ask(object, [T + 65, 2]);
  await new Promise((go) => setImmediate(go));
  assert.equal(storage.reads, 1, "one read for both");
  storage.release([0]);
  await new Promise((go) => setImmediate(go));
  // Both writes are out; the first-begun (the higher) lands first, and the second must not
  // lower the floor after it.
  storage.release([0, 1]);
  storage.held = null;
  assert.deepEqual(await Promise.all([first, second]), ["1", "1"]);
  assert.equal(storage.map.get("dpop-floor"), T + 70);
  const restarted = new RateLimiter({ storage }, {});
  assert.equal(await ask(restarted, [T + 70, 1], [T + 65, 2]), "22");
});

test("a failed read of the floor is tried again by the next call", async () => {
  nowMs = T * 1000;
  const storage = new Storage();
  storage.map.set("dpop-floor", T + 65);
  const object = new RateLimiter({ storage }, {});
  storage.failing = true;
  await assert.rejects(ask(object, [T + 66, 1]));
  storage.failing = false;
  assert.equal(await ask(object, [T + 65, 2], [T + 66, 1]), "21");
});

test("a proof forgotten past its last second stays refused if the clock steps back", async () => {
  const object = started();
  assert.equal(await ask(object, [T + 10, 1]), "1");
  nowMs = (T + 11) * 1000;
  assert.equal(await ask(object, [T + 70, 2]), "1");
  assert.equal(object.proofs.has(T + 10), false, "forgotten");
  nowMs = (T + 10) * 1000;
  assert.equal(await ask(object, [T + 10, 1]), "2");
});

test("a last second no edge sends is refused and never becomes the floor", async () => {
  const storage = new Storage();
  const object = started(storage);
  assert.equal(await ask(object, [T + 3_601, 1]), "0");
  assert.equal(await ask(object, [T + 3_600, 2]), "1");
  assert.equal(storage.map.get("dpop-floor"), T + 3_600);
});

test("no proof is fresh unless the floor over it is stored", async () => {
  const storage = new Storage();
  const object = started(storage);
  assert.equal(await ask(object, [T + 65, 1]), "1");
  storage.failing = true;
  // A proof above the stored floor needs a write: the call fails (the edge answers 503)...
  await assert.rejects(ask(object, [T + 66, 2]));
  // ...as does another of that second: the failed write stored nothing to stand on.
  await assert.rejects(ask(object, [T + 66, 7]));
  // The proof is never fresh later, in this object or after a restart.
  storage.failing = false;
  assert.equal(await ask(object, [T + 66, 2]), "0");
  assert.equal(await ask(new RateLimiter({ storage }, {}), [T + 66, 2]), "1", "above the floor: never accepted");
  // Under the stored floor no write is needed, so the failing storage does not matter.
  storage.failing = true;
  assert.equal(await ask(object, [T + 60, 3]), "1");
});

test("memory forgets proofs past their last second, and past its bound the oldest seconds", async () => {
  const object = started();
  assert.equal(await ask(object, [T + 1, 1], [T + 2, 2]), "11");
  nowMs = (T + 2) * 1000;
  assert.equal(await ask(object, [T + 65, 3]), "1");
  assert.equal(object.remembered, 2, "the proof whose last second passed is forgotten");
  // Fill memory past its bound (50,000), one second's proofs at a time.
  let id = 10;
  for (let second = 0; second < 40; second += 1) {
    for (let n = 0; n < 2_500; n += 64) {
      const call = [];
      for (let k = 0; k < 64; k += 1) call.push([T + 100 + second, (id += 1)]);
      assert.equal(await ask(object, ...call), "1".repeat(64));
    }
  }
  assert.ok(object.remembered <= 50_000, `${object.remembered} remembered`);
  assert.ok(object.floor >= T + 100, "the oldest seconds went under the floor");
  // A proof of a forgotten second is undecided; the newest second's are still known.
  assert.equal(await ask(object, [T + 100, 11]), "2");
  assert.equal(await ask(object, [T + 139, id]), "0");
  assert.equal(await ask(object, [T + 140, 1]), "1");
});
