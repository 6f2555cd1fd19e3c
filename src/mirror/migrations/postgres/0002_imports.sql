-- A full load replaces the citizen table and starts a new generation: record
-- versions restart, so caches key on (generation, record_version).
ALTER TABLE mirror_state ADD COLUMN generation bigint NOT NULL DEFAULT 0;

-- Every import that committed, by the digest of its mode and files: running
-- the same import again is a no-op.
CREATE TABLE import_log (
    digest      text PRIMARY KEY,
    mode        text NOT NULL CHECK (mode IN ('full', 'delta')),
    rows        bigint NOT NULL,
    changed     bigint NOT NULL,
    finished_at timestamptz NOT NULL DEFAULT now()
);
