// The peer for the load benchmark: node-oidc-provider issuing client_credentials access
// tokens as ES256 JWTs, configured as a user would. Usage: node oidc_provider_peer.mjs PORT
import { generateKeyPairSync } from "node:crypto";
import Provider from "oidc-provider";

const port = Number(process.argv[2] ?? 3000);
const issuer = `http://127.0.0.1:${port}`;
const signing = generateKeyPairSync("ec", { namedCurve: "P-256" }).privateKey.export({ format: "jwk" });

const provider = new Provider(issuer, {
  clients: [{
    client_id: "bench",
    client_secret: "bench-secret-bench-secret-bench-secret",
    grant_types: ["client_credentials"],
    redirect_uris: [],
    response_types: [],
    token_endpoint_auth_method: "client_secret_basic",
    id_token_signed_response_alg: "ES256", // the only key is ES256
  }],
  jwks: { keys: [{ ...signing, kid: "k1", alg: "ES256", use: "sig" }] },
  scopes: ["read"],
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => "https://api.test",
      useGrantedResource: () => true,
      getResourceServerInfo: () => ({
        scope: "read",
        audience: "https://api.test",
        accessTokenTTL: 600,
        accessTokenFormat: "jwt",
        jwt: { sign: { alg: "ES256" } },
      }),
    },
  },
});
provider.listen(port, "127.0.0.1", () => console.log(`oidc-provider listening on ${issuer}`));
