-- A third kind of revocation entry: every token a client was issued up to `issued_before`
-- (its disabling, or a secret rotation with --revoke-tokens). SQLite cannot change a CHECK
-- constraint in place, so the table is rebuilt with its rows and sequence.
CREATE TABLE revocations_new (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    kind          TEXT NOT NULL CHECK (kind IN ('jti', 'kid', 'client')),
    value         TEXT NOT NULL,
    expires_at    BIGINT NOT NULL,  -- after this the entry no longer matters
    created_at    BIGINT NOT NULL,
    issued_before BIGINT            -- kind 'client': tokens issued at or before this
);
INSERT INTO revocations_new (seq, kind, value, expires_at, created_at)
    SELECT seq, kind, value, expires_at, created_at FROM revocations;
DROP TABLE revocations;
ALTER TABLE revocations_new RENAME TO revocations;

-- Lookups by what is revoked (a revocation's duplicate check, introspection).
CREATE INDEX revocations_kind_value ON revocations (kind, value);
