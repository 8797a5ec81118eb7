// A third-party OAuth client (oauth4webapi) against the issuer: discovery (RFC 8414), dynamic
// registration (RFC 7591) with an initial access token, then a client-credentials grant with
// the secret it was given. Prints one JSON line of what it got. Run by
// tests/tests/registration_interop.rs against a real issuer process.
// Usage: node register.mjs ISSUER_URL INITIAL_ACCESS_TOKEN
import * as oauth from "oauth4webapi";

const [issuerUrl, initialAccessToken] = process.argv.slice(2);
const issuer = new URL(issuerUrl);
// The test issuer speaks plain HTTP on loopback.
const insecure = { [oauth.allowInsecureRequests]: true };

const as = await oauth.processDiscoveryResponse(
  issuer,
  await oauth.discoveryRequest(issuer, { ...insecure, algorithm: "oauth2" }),
);
const client = await oauth.processDynamicClientRegistrationResponse(
  await oauth.dynamicClientRegistrationRequest(
    as,
    {
      client_name: "oauth4webapi",
      scope: "read",
      grant_types: ["client_credentials"],
      token_endpoint_auth_method: "client_secret_basic",
    },
    { ...insecure, initialAccessToken },
  ),
);
const tokens = await oauth.processClientCredentialsResponse(
  as,
  client,
  await oauth.clientCredentialsGrantRequest(
    as,
    client,
    oauth.ClientSecretBasic(client.client_secret),
    new URLSearchParams({ scope: "read" }),
    insecure,
  ),
);
console.log(
  JSON.stringify({
    client_id: client.client_id,
    registration_client_uri: client.registration_client_uri,
    token_type: tokens.token_type,
    access_token: tokens.access_token,
    scope: tokens.scope,
  }),
);
