// CPU profile of one benchmark row (benches/run with PROFILE=<row>): connects to workerd's
// inspector, samples while wrk runs, and prints the functions with the most self time.
// Usage: node profile.mjs INSPECTOR_PORT SECONDS OUT.cpuprofile
import { writeFileSync } from "node:fs";
import WebSocket from "ws";

const [port, seconds, out] = process.argv.slice(2);
const targets = await (await fetch(`http://127.0.0.1:${port}/json`)).json();
const socket = new WebSocket(targets[0].webSocketDebuggerUrl);
await new Promise((resolve, reject) => socket.once("open", resolve).once("error", reject));
let id = 0;
const pending = new Map();
socket.on("message", (data) => {
  const message = JSON.parse(data);
  pending.get(message.id)?.(message.result);
});
const call = (method, params = {}) =>
  new Promise((resolve) => {
    pending.set(++id, resolve);
    socket.send(JSON.stringify({ id, method, params }));
  });

await call("Profiler.enable");
await call("Profiler.setSamplingInterval", { interval: 50 });
await call("Profiler.start");
await new Promise((resolve) => setTimeout(resolve, Number(seconds) * 1000));
const { profile } = await call("Profiler.stop");
writeFileSync(out, JSON.stringify(profile));
socket.close();

const self = new Map();
const byId = new Map(profile.nodes.map((node) => [node.id, node]));
const counts = new Map();
for (const sample of profile.samples) counts.set(sample, (counts.get(sample) ?? 0) + 1);
let total = 0;
for (const [nodeId, count] of counts) {
  const frame = byId.get(nodeId).callFrame;
  const name = `${frame.functionName || "(anonymous)"} ${frame.url.split("/").pop()}:${frame.lineNumber}`;
  self.set(name, (self.get(name) ?? 0) + count);
  total += count;
}
console.log(`\nself time, top 30 of ${total} samples (${out}):`);
for (const [name, count] of [...self].sort((a, b) => b[1] - a[1]).slice(0, 30)) {
  console.log(`${((100 * count) / total).toFixed(1).padStart(6)}%  ${name}`);
}
