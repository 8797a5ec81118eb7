// Serves the Worker of ./wrangler.toml in local workerd, as `wrangler dev --local` does, on a
// port the OS picks, and prints one JSON line saying where: {"message":"worker listening",
// "addr":"127.0.0.1:PORT"}. The end-to-end harness (tests/src/lib.rs) reads the port from
// that line. Local state (Durable Objects, the Cache API: one "location") lives under the
// directory given as the first argument. Stops on SIGTERM or SIGINT.
import { unstable_dev } from "wrangler";

const [persistTo] = process.argv.slice(2);
const worker = await unstable_dev(undefined, {
  config: "wrangler.toml",
  ip: "127.0.0.1",
  port: 0,
  persistTo,
  logLevel: "log",
  experimental: { disableExperimentalWarning: true },
});
console.log(JSON.stringify({ message: "worker listening", addr: `${worker.address}:${worker.port}` }));
for (const signal of ["SIGTERM", "SIGINT"]) {
  process.on(signal, async () => {
    await worker.stop();
    process.exit(0);
  });
}
