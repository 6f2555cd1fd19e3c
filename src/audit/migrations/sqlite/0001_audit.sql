-- The audit trail of the embedded default: the same tables as in Postgres
-- (see the Postgres migration for what each holds).
CREATE TABLE audit_log (
    seq            INTEGER PRIMARY KEY,
    at_us          INTEGER NOT NULL,
    kind           TEXT    NOT NULL,
    agency         TEXT    NOT NULL,
    purpose        TEXT    NOT NULL,
    request_id     TEXT    NOT NULL,
    subject        TEXT    NOT NULL,
    subject_index  TEXT    NOT NULL,
    verdict        TEXT    NOT NULL,
    reason         TEXT    NOT NULL,
    attestation_id TEXT    NOT NULL,
    attestation    TEXT    NOT NULL,
    request_digest TEXT    NOT NULL,
    prev_hash      BLOB    NOT NULL CHECK (length(prev_hash) = 32),
    row_hash       BLOB    NOT NULL CHECK (length(row_hash) = 32)
);

CREATE INDEX audit_log_subject ON audit_log (subject_index, seq);
CREATE INDEX audit_log_request ON audit_log (agency, request_id, seq);

CREATE TRIGGER audit_log_append_only BEFORE UPDATE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit rows are append-only');
END;

CREATE TABLE audit_head (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    seq  INTEGER NOT NULL,
    hash BLOB    NOT NULL CHECK (length(hash) = 32)
);
INSERT INTO audit_head VALUES (1, 0, zeroblob(32));

CREATE TABLE audit_checkpoint (
    seq   INTEGER PRIMARY KEY,
    at_us INTEGER NOT NULL,
    cut   INTEGER NOT NULL,
    token TEXT    NOT NULL
);
