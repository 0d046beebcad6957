-- Issue #14: the access trail for protected health information (HIPAA §164.312(b)): every
-- request to readings, evidence, alerts, patients' limits, exports and log entries by an
-- identified caller: who (token id, name, role), what (method, path, query, patient), when,
-- from where, and the answer's status. Append-only: updates and deletes are refused.
CREATE TABLE access_log (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    at          INTEGER NOT NULL,
    token_id    TEXT NOT NULL,
    token_name  TEXT NOT NULL,
    role        TEXT NOT NULL,
    method      TEXT NOT NULL,
    path        TEXT NOT NULL,
    query       TEXT NOT NULL,
    patient     TEXT,
    status      INTEGER NOT NULL,
    remote      TEXT NOT NULL
);
CREATE INDEX access_log_by_time ON access_log (at, id);
CREATE INDEX access_log_by_patient ON access_log (patient, at);
CREATE INDEX access_log_by_token ON access_log (token_id, at);

CREATE TRIGGER access_log_no_update BEFORE UPDATE ON access_log
BEGIN
    SELECT RAISE(ABORT, 'access_log is append-only');
END;
CREATE TRIGGER access_log_no_delete BEFORE DELETE ON access_log
BEGIN
    SELECT RAISE(ABORT, 'access_log is append-only');
END;
