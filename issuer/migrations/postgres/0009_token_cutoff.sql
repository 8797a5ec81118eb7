-- The `issued_before` of the client's latest revocation of its tokens (disable, rotate-secret
-- --revoke-tokens, deregister), a few seconds past the change (issuer/src/clients.rs,
-- CUTOFF_MARGIN_SECS): the token endpoint issues none at or before it, so no token made from
-- the client's new row falls under its own revocation.
ALTER TABLE clients ADD COLUMN tokens_valid_after BIGINT NOT NULL DEFAULT 0;
