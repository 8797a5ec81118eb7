-- The audit trail's HMAC chain (src/audit.rs): each row's MAC over the previous row's MAC and
-- its own fields. Rows from before this migration keep NULL: the chain starts after them.
ALTER TABLE audit_log ADD COLUMN mac BLOB;
