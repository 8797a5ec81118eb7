-- Edgeward issuer schema (PostgreSQL). Times are seconds since the Unix epoch.
CREATE TABLE clients (
    client_id   TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    secret_hash BYTEA NOT NULL,      -- SHA-256 of the 256-bit random secret
    scopes      TEXT NOT NULL,      -- space-separated
    audiences   TEXT NOT NULL,      -- space-separated; the first is the default
    rate_plan   TEXT,               -- e.g. 1000/60s;burst=100
    disabled_at BIGINT,             -- NULL while enabled
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);

CREATE TABLE signing_keys (
    kid           TEXT PRIMARY KEY,
    state         TEXT NOT NULL CHECK (state IN ('pending', 'active', 'retired', 'removed', 'revoked')),
    private_key   BYTEA NOT NULL,    -- AES-256-GCM: nonce || ciphertext || tag, AAD = kid
    public_sec1   BYTEA NOT NULL,    -- uncompressed SEC1 point
    created_at    BIGINT NOT NULL,
    activate_at   BIGINT NOT NULL,  -- not before this (published first)
    retired_at    BIGINT,
    remove_at     BIGINT,           -- retired keys stay published until then
    revoked_at    BIGINT
);

CREATE TABLE revocations (
    seq        BIGSERIAL PRIMARY KEY,
    kind       TEXT NOT NULL CHECK (kind IN ('jti', 'kid')),
    value      TEXT NOT NULL,
    expires_at BIGINT NOT NULL,     -- after this the entry no longer matters
    created_at BIGINT NOT NULL
);

CREATE TABLE audit_log (
    id      BIGSERIAL PRIMARY KEY,
    at      BIGINT NOT NULL,
    actor   TEXT NOT NULL,
    action  TEXT NOT NULL,
    subject TEXT NOT NULL,
    detail  TEXT NOT NULL
);

-- Named leases so that several instances never run the same job (key rotation) at once.
CREATE TABLE leases (
    name       TEXT PRIMARY KEY,
    holder     TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);
