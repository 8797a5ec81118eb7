// oauth4webapi against an edge that requires its own DPoP nonces (RFC 9449 §9): the client
// gets a DPoP-bound token from an issuer that requires nonces as well, then calls the API
// three times as oauth4webapi's documentation says to: a call refused with `use_dpop_nonce`
// is made once more (the library keeps the nonce the refusal carried, and puts it in the
// next proof). Prints one JSON line: each call's status and how many tries it took. Run by
// tests/tests/dpop_interop.rs against a real issuer process and the edge in workerd.
// Usage: node dpop-nonce.mjs ISSUER_URL API_URL CLIENT_ID CLIENT_SECRET
import * as oauth from "oauth4webapi";

const [issuerUrl, apiUrl, clientId, clientSecret] = process.argv.slice(2);
const issuer = new URL(issuerUrl);
// The test issuer and edge speak plain HTTP on loopback.
const insecure = { [oauth.allowInsecureRequests]: true };

const as = await oauth.processDiscoveryResponse(
  issuer,
  await oauth.discoveryRequest(issuer, { ...insecure, algorithm: "oauth2" }),
);
const client = { client_id: clientId };
const DPoP = oauth.DPoP(client, await oauth.generateKeyPair("ES256"));
// The issuer requires its own nonces too: the grant is made again once, as below.
let granted;
try {
  granted = await grant();
} catch (error) {
  if (!oauth.isDPoPNonceError(error)) throw error;
  granted = await grant();
}

async function grant() {
  return oauth.processClientCredentialsResponse(
    as,
    client,
    await oauth.clientCredentialsGrantRequest(
      as,
      client,
      oauth.ClientSecretBasic(clientSecret),
      new URLSearchParams({ scope: "read" }),
      { ...insecure, DPoP },
    ),
  );
}

/** One API call, tried again once if the edge asks for a nonce: its status and tries. */
async function call() {
  for (let tries = 1; ; tries++) {
    try {
      const response = await oauth.protectedResourceRequest(
        granted.access_token, "GET", new URL(apiUrl), new Headers(), null, { ...insecure, DPoP },
      );
      return { status: response.status, tries };
    } catch (error) {
      if (tries === 1 && oauth.isDPoPNonceError(error)) continue;
      return { status: error.response?.status ?? 0, tries, error: String(error) };
    }
  }
}

const calls = [];
for (let n = 0; n < 3; n++) calls.push(await call());
console.log(JSON.stringify({ token_type: granted.token_type, calls }));
