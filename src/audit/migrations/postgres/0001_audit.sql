-- The audit trail. One row per check, hash-chained in `seq` order: each
-- row's `row_hash` covers `prev_hash` (its predecessor's `row_hash`) and its
-- own content. No ID number, name or birth date: the person is filed under
-- `subject_index`, a service-keyed HMAC of the ID number.
CREATE TABLE audit_log (
    seq            bigint PRIMARY KEY,
    at_us          bigint NOT NULL,
    kind           text   NOT NULL,
    agency         text   NOT NULL,
    purpose        text   NOT NULL,
    request_id     text   NOT NULL,
    subject        text   NOT NULL,
    subject_index  text   NOT NULL,
    verdict        text   NOT NULL,
    reason         text   NOT NULL,
    attestation_id text   NOT NULL,
    attestation    text   NOT NULL,
    request_digest text   NOT NULL,
    prev_hash      bytea  NOT NULL CHECK (length(prev_hash) = 32),
    row_hash       bytea  NOT NULL CHECK (length(row_hash) = 32)
);

-- A person's access history, newest first.
CREATE INDEX audit_log_subject ON audit_log (subject_index, seq);
-- An agency's retries: the first answer to each request_id.
CREATE INDEX audit_log_request ON audit_log (agency, request_id, seq);

-- Rows are appended, and removed only by prune, oldest first. The trigger
-- is a guard against mistakes, not against the database's owner: the chain
-- and the signed checkpoints are what find a change.
CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit rows are append-only';
END $$;
CREATE TRIGGER audit_log_append_only BEFORE UPDATE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();

-- The newest row: locked by every append, so that instances sharing the
-- database append one after another, in one chain.
CREATE TABLE audit_head (
    id   integer PRIMARY KEY CHECK (id = 1),
    seq  bigint  NOT NULL,
    hash bytea   NOT NULL CHECK (length(hash) = 32)
);
INSERT INTO audit_head VALUES (1, 0, decode(repeat('00', 32), 'hex'));

-- Signed heads (compact JWS, typ vnid-audit-checkpoint+jwt). `cut` marks
-- where prune cut the trail.
CREATE TABLE audit_checkpoint (
    seq   bigint  PRIMARY KEY,
    at_us bigint  NOT NULL,
    cut   boolean NOT NULL,
    token text    NOT NULL
);
