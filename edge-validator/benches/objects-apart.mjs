// A Durable Object namespace whose objects live in another workerd process (benches/run's
// edge-fresh-dpop-apart row): what the edge's `RATE_LIMITER` binding is in that row, as a
// workerd wrapped binding around a service binding (`OBJECTS`) to that process. The edge
// calls it as it calls a namespace (js/io.js `askObject`: `get(idFromName(name)).fetch(url)`),
// and the objects' own CPU is spent in the other process, as at Cloudflare, where an object
// runs in an isolate of its own: the row's CPU is the edge's side of each call.
export default function (env) {
  const objects = env.OBJECTS;
  return {
    idFromName: (name) => name,
    get: (name) => ({
      fetch: (url) =>
        objects.fetch(`http://objects/?name=${encodeURIComponent(name)}&url=${encodeURIComponent(url)}`),
    }),
  };
}
