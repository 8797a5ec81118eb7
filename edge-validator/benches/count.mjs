// The request driver of benches/run's MEASURE=instructions and MEASURE=cpu: COUNT
// requests to URL one after another on one kept-alive connection, each with the bearer token
// on line FROM + i of TOKENS (or TOKEN itself on every request when TOKENS is "-").
// Prints how many answers were not 200; exits non-zero when any was.
// Usage: node count.mjs URL TOKENS|- TOKEN FROM COUNT
import { readFileSync } from "node:fs";

const [url, tokensPath, hitToken, from, count] = process.argv.slice(2);
const tokens = tokensPath === "-" ? null : readFileSync(tokensPath, "utf8").split("\n");
let failed = 0;
for (let i = 0; i < Number(count); i++) {
  const token = tokens ? tokens[Number(from) + i] : hitToken;
  const response = await fetch(url, { headers: { authorization: `Bearer ${token}` } });
  await response.arrayBuffer();
  if (response.status !== 200) failed++;
}
console.log(failed);
process.exit(failed === 0 ? 0 : 1);
