-- Exports written by `vnid audit export`: the rows `from_seq` to `to_seq`
-- went into a file whose lines hash to `sha256`. `vnid audit prune`
-- removes only rows an export covers (unless forced). A guard against
-- mistakes: the export file, not this table, is the evidence.
CREATE TABLE audit_export (
    from_seq bigint NOT NULL,
    to_seq   bigint NOT NULL,
    at_us    bigint NOT NULL,
    sha256   text   NOT NULL,
    PRIMARY KEY (from_seq, to_seq, at_us)
);
