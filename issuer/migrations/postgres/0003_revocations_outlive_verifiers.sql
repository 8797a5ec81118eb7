-- Revocation entries outlive every verifier that could still accept what they revoke
-- (issuer/src/revocations.rs): a key's entry never expires (a thief can mint fresh tokens,
-- and edges may hold stale or cached key sets), and a token's lasts until its exp plus the
-- largest leeway a verifier may use (300 s). Rows written before this release get the same.
UPDATE revocations SET expires_at = 253402300799 WHERE kind = 'kid';
UPDATE revocations SET expires_at = expires_at + 300 WHERE kind = 'jti';
