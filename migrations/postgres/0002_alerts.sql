-- Clinical alerts (one not-yet-resolved alert per patient and parameter) with every transition,
-- per-patient alert limits, clinician webhook endpoints, the durable delivery outbox (written in
-- the same transaction as the alert change) and its attempt log. Times are Unix milliseconds.

CREATE TABLE alert_limits (
    patient  TEXT NOT NULL,
    loinc    TEXT NOT NULL,
    low      DOUBLE PRECISION,
    high     DOUBLE PRECISION,
    set_by   TEXT NOT NULL,
    set_at   BIGINT NOT NULL,
    PRIMARY KEY (patient, loinc)
);

CREATE TABLE alerts (
    id               TEXT PRIMARY KEY,
    patient          TEXT NOT NULL,
    parameter        TEXT NOT NULL,            -- LOINC code, or 'news2' (aggregate score)
    state            TEXT NOT NULL,            -- open | acknowledged | resolved
    severity         SMALLINT NOT NULL,        -- 2 urgent, 3 emergency
    value            DOUBLE PRECISION NOT NULL, -- latest abnormal value (or score)
    reading_index    BIGINT NOT NULL,          -- latest reading that raised or kept it
    opened_at        BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL,
    last_abnormal_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX alerts_one_unresolved ON alerts (patient, parameter) WHERE state <> 'resolved';
CREATE INDEX alerts_by_state ON alerts (state, updated_at);

CREATE TABLE alert_events (
    alert_id       TEXT NOT NULL REFERENCES alerts (id),
    seq            INTEGER NOT NULL,
    at             BIGINT NOT NULL,
    transition     TEXT NOT NULL,              -- opened | escalated | acknowledged | resolved
    actor          TEXT NOT NULL,              -- 'system' or the caller's token name
    severity       SMALLINT NOT NULL,
    reading_index  BIGINT,
    PRIMARY KEY (alert_id, seq)
);

CREATE TABLE webhook_endpoints (
    id               TEXT PRIMARY KEY,
    url              TEXT NOT NULL,
    event_types      TEXT NOT NULL,            -- JSON array of event types
    secret           TEXT NOT NULL,            -- whsec_…
    previous_secret  TEXT,                     -- still signed with until previous_until
    previous_until   BIGINT,
    disabled_reason  TEXT,                     -- set: no deliveries
    created_at       BIGINT NOT NULL
);

CREATE TABLE webhook_outbox (
    msg_id           TEXT NOT NULL,            -- the webhook-id, the same on every retry
    endpoint_id      TEXT NOT NULL REFERENCES webhook_endpoints (id),
    event_type       TEXT NOT NULL,
    payload          TEXT NOT NULL,            -- the JSON body, exactly as signed
    created_at       BIGINT NOT NULL,
    state            TEXT NOT NULL,            -- pending | delivered | dead
    attempts         INTEGER NOT NULL,
    next_attempt_at  BIGINT NOT NULL,
    locked_until     BIGINT NOT NULL,          -- claimed by a delivery worker until then
    last_status      INTEGER,
    last_error       TEXT,
    delivered_at     BIGINT,
    PRIMARY KEY (msg_id, endpoint_id)
);
CREATE INDEX webhook_outbox_due ON webhook_outbox (state, next_attempt_at);

CREATE TABLE webhook_attempts (
    msg_id       TEXT NOT NULL,
    endpoint_id  TEXT NOT NULL,
    attempt      INTEGER NOT NULL,
    at           BIGINT NOT NULL,
    status       INTEGER,                      -- HTTP status, if the receiver answered
    error        TEXT,
    duration_ms  BIGINT NOT NULL,
    PRIMARY KEY (msg_id, endpoint_id, attempt)
);
