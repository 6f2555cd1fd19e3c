-- One check per (agency, request_id), kept apart from the rows as on
-- Postgres (whose rows are partitioned); the embedded trail's rows stay in
-- one table, pruned row by row.
CREATE TABLE audit_request (
    agency     TEXT    NOT NULL,
    request_id TEXT    NOT NULL,
    seq        INTEGER NOT NULL,
    PRIMARY KEY (agency, request_id)
);
CREATE INDEX audit_request_seq ON audit_request (seq);
INSERT INTO audit_request (agency, request_id, seq)
    SELECT agency, request_id, min(seq) FROM audit_log
    WHERE kind <> 'access_history' GROUP BY agency, request_id;
DROP INDEX audit_log_request;
