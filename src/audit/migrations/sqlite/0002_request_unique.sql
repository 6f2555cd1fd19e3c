-- One check per (agency, request_id): the trail itself refuses a second
-- request under an id the agency already used, whatever Redis says and
-- however close together two copies arrive. (An operator's history reads
-- keep their own ids out of it.) A trail written before this migration
-- that already holds such a pair (two copies racing each other were both
-- answered then) must be pruned past it before this migration can run.
DROP INDEX audit_log_request;
CREATE UNIQUE INDEX audit_log_request ON audit_log (agency, request_id)
    WHERE kind <> 'access_history';

-- An agency's checks since a time: the day's count a quota rebuilds when
-- Redis has lost it.
CREATE INDEX audit_log_agency_time ON audit_log (agency, at_us)
    WHERE kind <> 'access_history';
