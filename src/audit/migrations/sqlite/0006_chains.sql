-- The chain each row links into, as on Postgres (see its 0006): the
-- embedded trail has one writer and one chain, the first.
ALTER TABLE audit_log ADD COLUMN chain INTEGER NOT NULL DEFAULT 1;
CREATE INDEX audit_log_chain ON audit_log (chain, seq);
