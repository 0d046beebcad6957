-- The Merkle log, its tiles and checkpoints, the readings index, the registry, access tokens and
-- the ingest audit trail. Integers are Unix milliseconds or log indices; hashes are SHA-256.

CREATE TABLE log_meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- Leaf data exactly as logged (a log-entry, see docs/FORMATS.md). Append-only.
CREATE TABLE entries (
    idx        BIGINT PRIMARY KEY,
    kind       SMALLINT NOT NULL,
    leaf_data  BYTEA NOT NULL,
    logged_at  BIGINT NOT NULL
);

-- C2SP tlog-tiles hash tiles: level L holds tree level 8L; width < 256 while partial.
CREATE TABLE tiles (
    level   SMALLINT NOT NULL,
    idx     BIGINT NOT NULL,
    width   INTEGER NOT NULL,
    hashes  BYTEA NOT NULL,
    PRIMARY KEY (level, idx)
);

CREATE TABLE checkpoints (
    size          BIGINT PRIMARY KEY,
    root          BYTEA NOT NULL,
    note          TEXT NOT NULL,
    published_at  BIGINT NOT NULL
);

-- Derived query copy of each logged reading; the evidence is entries.leaf_data.
CREATE TABLE readings (
    idx          BIGINT PRIMARY KEY REFERENCES entries (idx),
    sensor_id    TEXT NOT NULL,
    seq          BIGINT NOT NULL,
    sensor_hash  BYTEA NOT NULL,
    gateway_id   TEXT NOT NULL,
    measured_at  BIGINT NOT NULL,
    received_at  BIGINT NOT NULL,
    patient      TEXT,
    UNIQUE (sensor_id, seq)
);
CREATE INDEX readings_by_patient ON readings (patient, measured_at);
CREATE INDEX readings_by_sensor ON readings (sensor_id, measured_at);

-- Registry state, each row derived from the registry event logged at `idx`.
CREATE TABLE registry_keys (
    key_id      BYTEA PRIMARY KEY,
    device_id   TEXT NOT NULL,
    role        TEXT NOT NULL,
    cert        BYTEA NOT NULL,
    valid_from  BIGINT NOT NULL,
    valid_until BIGINT,
    idx         BIGINT NOT NULL
);
CREATE TABLE registry_bindings (
    idx         BIGINT PRIMARY KEY,
    sensor_id   TEXT NOT NULL,
    gateway_id  TEXT NOT NULL,
    from_ms     BIGINT NOT NULL,
    until_ms    BIGINT
);
CREATE TABLE registry_assignments (
    idx         BIGINT PRIMARY KEY,
    sensor_id   TEXT NOT NULL,
    pseudonym   TEXT NOT NULL,
    from_ms     BIGINT NOT NULL
);
CREATE TABLE registry_revocations (
    idx         BIGINT PRIMARY KEY,
    key_id      BYTEA NOT NULL,
    from_ms     BIGINT NOT NULL,
    reason      TEXT NOT NULL
);

CREATE TABLE tokens (
    token_hash  BYTEA PRIMARY KEY,
    role        TEXT NOT NULL,
    name        TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);

-- Every rejected ingest item (nothing of it is stored as a reading).
CREATE TABLE rejections (
    id              BIGSERIAL PRIMARY KEY,
    at              BIGINT NOT NULL,
    reason          TEXT NOT NULL,
    detail          TEXT NOT NULL,
    envelope_sha256 BYTEA NOT NULL
);

-- Security alerts, e.g. equivocation: two different signed readings with one sequence number.
CREATE TABLE security_alerts (
    id          BIGSERIAL PRIMARY KEY,
    at          BIGINT NOT NULL,
    kind        TEXT NOT NULL,
    sensor_id   TEXT NOT NULL,
    seq         BIGINT NOT NULL,
    logged_idx  BIGINT NOT NULL,
    envelope_sha256 BYTEA NOT NULL
);
