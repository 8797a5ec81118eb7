-- Only clients marked as resource servers may call the introspection endpoint (RFC 7662),
-- and only for tokens addressed to their own audiences. 0: an ordinary client.
ALTER TABLE clients ADD COLUMN resource_server BIGINT NOT NULL DEFAULT 0;
