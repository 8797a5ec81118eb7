-- RFC 7592: a client registered over HTTP (RFC 7591) manages its own registration with a
-- registration access token, stored as its SHA-256 like a secret. NULL: none (made by ops,
-- or deregistered).
ALTER TABLE clients ADD COLUMN registration_token_hash BLOB;
