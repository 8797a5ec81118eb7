-- Clients revoked before 0009 carry their latest revocation's cut-off on their row, so the
-- tokens issued to them from now on are stamped (`client_cutoff`) with it: stamped 0, every
-- new token would fall under that older revocation at introspection.
UPDATE clients SET tokens_valid_after = (
    SELECT MAX(issued_before) FROM revocations
    WHERE kind = 'client' AND value = clients.client_id
)
WHERE EXISTS (
    SELECT 1 FROM revocations
    WHERE kind = 'client' AND value = clients.client_id AND issued_before > clients.tokens_valid_after
);
