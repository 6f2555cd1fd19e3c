-- Chains: instances that share the trail append to chains of their own,
-- each under its own head's lock, instead of all through one. Each row
-- links (`prev_hash`) to the row before it in its `chain`; `audit_head`
-- holds one row per chain (`id`, created by the service up to
-- `audit.chains`); `seq` numbers every row of every chain, taken from
-- `audit_seq` once the chain's lock is held (so each chain's rows are in
-- `seq` order), and may skip numbers a failed append took. The rows
-- written so far are chain 1; nothing is rewritten.
ALTER TABLE audit_log ADD COLUMN chain smallint NOT NULL DEFAULT 1;
ALTER TABLE audit_head DROP CONSTRAINT audit_head_id_check;
ALTER TABLE audit_head ADD CONSTRAINT audit_head_chain CHECK (id BETWEEN 1 AND 1000);
CREATE SEQUENCE audit_seq;
SELECT setval('audit_seq', greatest(seq, 1), seq > 0) FROM audit_head WHERE id = 1;
