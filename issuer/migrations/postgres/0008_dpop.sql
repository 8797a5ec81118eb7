-- RFC 9449 §5.2 `dpop_bound_access_tokens`: 1 when the client must prove possession of a
-- DPoP key at the token endpoint (it then only ever gets DPoP-bound tokens).
ALTER TABLE clients ADD COLUMN require_dpop BIGINT NOT NULL DEFAULT 0;
-- DPoP proofs the token endpoint accepted, by `VerifiedProof::replay_key` (SHA-256 of the key
-- thumbprint and the `jti`), kept until the last second the proof would be accepted: a
-- second use within that window finds its row. Rows past `expires_at` are pruned.
CREATE TABLE dpop_proofs (
    replay_key TEXT PRIMARY KEY,
    expires_at BIGINT NOT NULL
);
CREATE INDEX dpop_proofs_expiry ON dpop_proofs (expires_at);
