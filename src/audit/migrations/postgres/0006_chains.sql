-- Chains: instances that share the trail append to chains of their own,
-- each under its own head's lock, instead of all through one. Each row
-- links (`prev_hash`) to the row before it in its `chain`; `audit_head`
-- holds one row per chain (`id`, created by the service up to
-- `audit.chains`); `seq` numbers every row of every chain, taken from
-- `audit_seq` by the append that writes them (which moves its chain's head
-- only if no one else appended there since, so each chain's rows are in
-- `seq` order), and may skip numbers a failed append took. The rows
-- written so far are chain 1; nothing is rewritten. A chain's newest row
-- before a given row (where a prune's cut or an export's range leaves each
-- chain) is found through `audit_log_chain`, whatever the chain's share.
ALTER TABLE audit_log ADD COLUMN chain smallint NOT NULL DEFAULT 1;
CREATE INDEX audit_log_chain ON audit_log (chain, seq);
ALTER TABLE audit_head DROP CONSTRAINT audit_head_id_check;
ALTER TABLE audit_head ADD CONSTRAINT audit_head_chain CHECK (id BETWEEN 1 AND 1000);
CREATE SEQUENCE audit_seq;
SELECT setval('audit_seq', greatest(seq, 1), seq > 0) FROM audit_head WHERE id = 1;
