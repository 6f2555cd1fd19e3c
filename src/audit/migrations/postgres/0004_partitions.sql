-- One check per (agency, request_id), kept apart from the rows: a unique
-- index on a partitioned table must hold the partition key, which would
-- make it unique per partition only. Pruned with the rows it points at.
CREATE TABLE audit_request (
    agency     text   NOT NULL,
    request_id text   NOT NULL,
    seq        bigint NOT NULL,
    PRIMARY KEY (agency, request_id)
);
CREATE INDEX audit_request_seq ON audit_request (seq);
INSERT INTO audit_request (agency, request_id, seq)
    SELECT agency, request_id, min(seq) FROM audit_log
    WHERE kind <> 'access_history' GROUP BY agency, request_id;

-- The rows, partitioned by `seq` in ranges of `audit.partition_rows`
-- (created ahead by the appending instances, listed in audit_partition),
-- so that retention drops whole partitions: rows are appended in time
-- order, so each partition holds one stretch of time. The rows written so
-- far become the first partition, without being copied.
DROP TRIGGER audit_log_append_only ON audit_log;
DROP INDEX audit_log_request;
ALTER TABLE audit_log RENAME TO audit_log_first;
ALTER INDEX audit_log_pkey RENAME TO audit_log_first_pkey;
ALTER INDEX audit_log_subject RENAME TO audit_log_first_subject;
ALTER INDEX audit_log_agency_time RENAME TO audit_log_first_agency_time;
CREATE TABLE audit_log (LIKE audit_log_first INCLUDING DEFAULTS INCLUDING CONSTRAINTS)
    PARTITION BY RANGE (seq);
ALTER TABLE audit_log ADD PRIMARY KEY (seq);
CREATE INDEX audit_log_subject ON audit_log (subject_index, seq);
CREATE INDEX audit_log_agency_time ON audit_log (agency, at_us)
    WHERE kind <> 'access_history';

-- Each partition and the rows it takes: `from_seq` to `to_seq` - 1.
CREATE TABLE audit_partition (
    name     text   PRIMARY KEY,
    from_seq bigint NOT NULL,
    to_seq   bigint NOT NULL UNIQUE
);
DO $$
DECLARE
    upto bigint;
BEGIN
    SELECT seq + 1 INTO upto FROM audit_head WHERE id = 1;
    EXECUTE format(
        'ALTER TABLE audit_log ATTACH PARTITION audit_log_first FOR VALUES FROM (MINVALUE) TO (%s)',
        upto);
    INSERT INTO audit_partition VALUES ('audit_log_first', 0, upto);
END $$;

CREATE TRIGGER audit_log_append_only BEFORE UPDATE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
