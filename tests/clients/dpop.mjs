// A third-party OAuth client (oauth4webapi) with DPoP (RFC 9449): it reads the issuer's
// metadata, gets a DPoP-bound token with a key pair of its own, and calls the API through the
// edge twice (oauth4webapi makes a new proof for each call); a second client gets a plain
// bearer token and calls the API with it. Prints one JSON line of what each got. Run by
// tests/tests/dpop_interop.rs against a real issuer process and the edge in workerd.
// Usage: node dpop.mjs ISSUER_URL API_URL DPOP_ID DPOP_SECRET BEARER_ID BEARER_SECRET
import * as oauth from "oauth4webapi";
import { calculateJwkThumbprint, exportJWK } from "jose";

const [issuerUrl, apiUrl, dpopId, dpopSecret, bearerId, bearerSecret] = process.argv.slice(2);
const issuer = new URL(issuerUrl);
// The test issuer and edge speak plain HTTP on loopback.
const insecure = { [oauth.allowInsecureRequests]: true };

const as = await oauth.processDiscoveryResponse(
  issuer,
  await oauth.discoveryRequest(issuer, { ...insecure, algorithm: "oauth2" }),
);

/** `GET apiUrl` with `token` (and DPoP), as status and body, a refusal included. */
async function call(token, options) {
  try {
    const response = await oauth.protectedResourceRequest(token, "GET", new URL(apiUrl), new Headers(), null, {
      ...insecure,
      ...options,
    });
    return { status: response.status, body: await response.json() };
  } catch (error) {
    return { status: error.response?.status ?? 0, error: String(error) };
  }
}

const client = { client_id: dpopId };
const keyPair = await oauth.generateKeyPair("ES256");
const DPoP = oauth.DPoP(client, keyPair);
const granted = await oauth.processClientCredentialsResponse(
  as,
  client,
  await oauth.clientCredentialsGrantRequest(
    as,
    client,
    oauth.ClientSecretBasic(dpopSecret),
    new URLSearchParams({ scope: "read" }),
    { ...insecure, DPoP },
  ),
);
const first = await call(granted.access_token, { DPoP });
const second = await call(granted.access_token, { DPoP });

const bearerClient = { client_id: bearerId };
const bearer = await oauth.processClientCredentialsResponse(
  as,
  bearerClient,
  await oauth.clientCredentialsGrantRequest(
    as,
    bearerClient,
    oauth.ClientSecretBasic(bearerSecret),
    new URLSearchParams({ scope: "read" }),
    insecure,
  ),
);
const plain = await call(bearer.access_token, {});

console.log(
  JSON.stringify({
    dpop: {
      token_type: granted.token_type,
      access_token: granted.access_token,
      jkt: await calculateJwkThumbprint(await exportJWK(keyPair.publicKey)),
      first,
      second,
    },
    bearer: { token_type: bearer.token_type, access_token: bearer.access_token, call: plain },
  }),
);
