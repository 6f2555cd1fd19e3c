-- New rows keep their attestation as bytes, as on Postgres (see its
-- 0005); rows written before keep their text in `attestation`.
ALTER TABLE audit_log ADD COLUMN attestation_bytes BLOB;
