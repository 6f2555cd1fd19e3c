-- Each new row keeps its attestation as bytes (`attestation_bytes`): the
-- compact JWS's three base64url parts decoded (0x01, header, 0x00,
-- payload, 0x00, signature), a quarter smaller than the text, which the
-- service turns back into exactly the text the caller was given (so the
-- row's hash, which covers the text, holds). A token that would not come
-- back exactly is kept as its text's bytes, which never begin with 0x01.
-- Rows written before keep their text in `attestation` (new rows leave it
-- empty): nothing is rewritten, so the upgrade takes no time and no lock
-- worth the name, and the old rows leave with their partitions.
ALTER TABLE audit_log
    ADD COLUMN attestation_bytes bytea,
    ALTER COLUMN attestation SET DEFAULT '';
