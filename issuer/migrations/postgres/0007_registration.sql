-- RFC 7592: a client registered over HTTP (RFC 7591) manages its own registration with a
-- registration access token, stored as its SHA-256 like a secret. NULL: none (made by ops,
-- disabled, or deregistered).
ALTER TABLE clients ADD COLUMN registration_token_hash BYTEA;
-- The token endpoint authentication method it registered with, as RFC 7592 reads it back.
ALTER TABLE clients ADD COLUMN token_endpoint_auth_method TEXT;
-- When it deregistered (RFC 7592 §2.3): its id and credentials are dead for good, and
-- enabling it again is refused.
ALTER TABLE clients ADD COLUMN deregistered_at BIGINT;
