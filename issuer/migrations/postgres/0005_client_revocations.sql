-- A third kind of revocation entry: every token a client was issued up to `issued_before`
-- (its disabling, or a secret rotation with --revoke-tokens).
ALTER TABLE revocations DROP CONSTRAINT revocations_kind_check;
ALTER TABLE revocations ADD CONSTRAINT revocations_kind_check CHECK (kind IN ('jti', 'kid', 'client'));
ALTER TABLE revocations ADD COLUMN issued_before BIGINT; -- kind 'client': tokens issued at or before this

-- Lookups by what is revoked (a revocation's duplicate check, introspection).
CREATE INDEX revocations_kind_value ON revocations (kind, value);
