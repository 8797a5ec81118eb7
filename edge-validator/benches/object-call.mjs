// The object-call benchmark's Worker (benches/object-call): what one Durable Object call costs
// a request in workerd, by each way of making it. MODE picks the row:
//   none        the request is answered at once (the floor)
//   fetch       one call by stub.fetch(): the object reads and writes a storage key, as the
//               edge's rate-limit objects do (a DPoP replay object writes at most once a
//               second)
//   rpc         the same call as a JavaScript RPC method (no Request, URL or Response)
//   rpc-memory  an RPC call whose object keeps its keys in memory: the least any object
//               call costs
import { DurableObject } from "cloudflare:workers";

export class Calls extends DurableObject {
  async fetch(request) {
    return new Response(await this.seen(new URL(request.url).searchParams.get("key")));
  }

  async seen(key) {
    const seen = (await this.ctx.storage.get(key)) !== undefined;
    if (!seen) await this.ctx.storage.put(key, 1);
    return seen ? "0" : "1";
  }

  seenInMemory(key) {
    this.keys ??= new Set();
    const seen = this.keys.has(key);
    if (!seen) this.keys.add(key);
    return seen ? "0" : "1";
  }
}

let sent = 0;

export default {
  async fetch(request, env) {
    if (env.MODE === "none") return new Response("1");
    // A new key each time, as each new proof is; one object, as for one client's key.
    const key = String(sent++);
    const object = env.CALLS.get(env.CALLS.idFromName("one-client"));
    switch (env.MODE) {
      case "fetch":
        return new Response(await (await object.fetch(`https://object/?key=${key}`)).text());
      case "rpc":
        return new Response(await object.seen(key));
      case "rpc-memory":
        return new Response(await object.seenInMemory(key));
      default:
        return new Response(`unknown MODE ${env.MODE}`, { status: 500 });
    }
  },
};
