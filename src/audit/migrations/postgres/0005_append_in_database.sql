-- A group chained in the database: the head locked, each row hashed onto
-- the one before exactly as vnid hashes it (audit::chain::row_hash:
-- SHA-256 of "vnid-audit-v1" 0, the previous hash, at_us as 8 bytes
-- big-endian, then each text field as its length in 8 bytes big-endian and
-- its UTF-8 bytes), the rows and their request ids inserted, the head
-- moved, all in one statement. Instances that share the trail queue on the
-- head's lock for the statement's length only, and none computes a group
-- for a head that has moved on: what they do when their optimistic append
-- finds another instance was first.
CREATE FUNCTION vnid_audit_field(t text) RETURNS bytea
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    RETURN int8send(octet_length(t)::bigint) || convert_to(t, 'UTF8');

CREATE FUNCTION vnid_audit_append(
    p_at_us bigint[], p_kind text[], p_agency text[], p_purpose text[], p_request_id text[],
    p_subject text[], p_subject_index text[], p_verdict text[], p_reason text[],
    p_attestation_id text[], p_attestation text[], p_request_digest text[],
    OUT head_seq bigint, OUT head_hash bytea
) LANGUAGE plpgsql AS $$
DECLARE
    prefix constant bytea := convert_to('vnid-audit-v1', 'UTF8') || '\x00'::bytea;
    seqs bigint[] := '{}';
    prevs bytea[] := '{}';
    hashes bytea[] := '{}';
BEGIN
    SELECT seq, hash INTO head_seq, head_hash FROM audit_head WHERE id = 1 FOR UPDATE;
    FOR i IN 1 .. coalesce(cardinality(p_at_us), 0) LOOP
        prevs := array_append(prevs, head_hash);
        head_hash := sha256(prefix || head_hash || int8send(p_at_us[i])
            || vnid_audit_field(p_kind[i]) || vnid_audit_field(p_agency[i])
            || vnid_audit_field(p_purpose[i]) || vnid_audit_field(p_request_id[i])
            || vnid_audit_field(p_subject[i]) || vnid_audit_field(p_subject_index[i])
            || vnid_audit_field(p_verdict[i]) || vnid_audit_field(p_reason[i])
            || vnid_audit_field(p_attestation_id[i]) || vnid_audit_field(p_attestation[i])
            || vnid_audit_field(p_request_digest[i]));
        head_seq := head_seq + 1;
        seqs := array_append(seqs, head_seq);
        hashes := array_append(hashes, head_hash);
    END LOOP;
    INSERT INTO audit_request (agency, request_id, seq)
        SELECT a, r, s FROM unnest(p_agency, p_request_id, seqs, p_kind) AS u(a, r, s, k)
        WHERE k <> 'access_history';
    INSERT INTO audit_log (seq, at_us, kind, agency, purpose, request_id, subject, subject_index,
                           verdict, reason, attestation_id, attestation, request_digest,
                           prev_hash, row_hash)
        SELECT * FROM unnest(seqs, p_at_us, p_kind, p_agency, p_purpose, p_request_id, p_subject,
                             p_subject_index, p_verdict, p_reason, p_attestation_id,
                             p_attestation, p_request_digest, prevs, hashes);
    UPDATE audit_head SET seq = head_seq, hash = head_hash WHERE id = 1;
END $$;
