-- The Merkle log, its tiles and checkpoints, the readings index, the registry, access tokens and
-- the ingest audit trail. Integers are Unix milliseconds or log indices; hashes are SHA-256.

CREATE TABLE log_meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- Leaf data exactly as logged (a log-entry, see docs/FORMATS.md). Append-only.
CREATE TABLE entries (
    idx        INTEGER PRIMARY KEY,
    kind       INTEGER NOT NULL,
    leaf_data  BLOB NOT NULL,
    logged_at  INTEGER NOT NULL
);

-- C2SP tlog-tiles hash tiles: level L holds tree level 8L; width < 256 while partial.
CREATE TABLE tiles (
    level   INTEGER NOT NULL,
    idx     INTEGER NOT NULL,
    width   INTEGER NOT NULL,
    hashes  BLOB NOT NULL,
    PRIMARY KEY (level, idx)
);

CREATE TABLE checkpoints (
    size          INTEGER PRIMARY KEY,
    root          BLOB NOT NULL,
    note          TEXT NOT NULL,
    published_at  INTEGER NOT NULL
);

-- Derived query copy of each logged reading; the evidence is entries.leaf_data.
CREATE TABLE readings (
    idx          INTEGER PRIMARY KEY REFERENCES entries (idx),
    sensor_id    TEXT NOT NULL,
    seq          INTEGER NOT NULL,
    sensor_hash  BLOB NOT NULL,
    gateway_id   TEXT NOT NULL,
    measured_at  INTEGER NOT NULL,
    received_at  INTEGER NOT NULL,
    patient      TEXT,
    UNIQUE (sensor_id, seq)
);
CREATE INDEX readings_by_patient ON readings (patient, measured_at);
CREATE INDEX readings_by_sensor ON readings (sensor_id, measured_at);

-- Registry state, each row derived from the registry event logged at `idx`.
CREATE TABLE registry_keys (
    key_id      BLOB PRIMARY KEY,
    device_id   TEXT NOT NULL,
    role        TEXT NOT NULL,
    cert        BLOB NOT NULL,
    valid_from  INTEGER NOT NULL,
    valid_until INTEGER,
    idx         INTEGER NOT NULL
);
CREATE TABLE registry_bindings (
    idx         INTEGER PRIMARY KEY,
    sensor_id   TEXT NOT NULL,
    gateway_id  TEXT NOT NULL,
    from_ms     INTEGER NOT NULL,
    until_ms    INTEGER
);
CREATE TABLE registry_assignments (
    idx         INTEGER PRIMARY KEY,
    sensor_id   TEXT NOT NULL,
    pseudonym   TEXT NOT NULL,
    from_ms     INTEGER NOT NULL
);
CREATE TABLE registry_revocations (
    idx         INTEGER PRIMARY KEY,
    key_id      BLOB NOT NULL,
    from_ms     INTEGER NOT NULL,
    reason      TEXT NOT NULL
);

CREATE TABLE tokens (
    token_hash  BLOB PRIMARY KEY,
    role        TEXT NOT NULL,
    name        TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);

-- Every rejected ingest item (nothing of it is stored as a reading).
CREATE TABLE rejections (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    at              INTEGER NOT NULL,
    reason          TEXT NOT NULL,
    detail          TEXT NOT NULL,
    envelope_sha256 BLOB NOT NULL
);

-- Security alerts, e.g. equivocation: two different signed readings with one sequence number.
CREATE TABLE security_alerts (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    at          INTEGER NOT NULL,
    kind        TEXT NOT NULL,
    sensor_id   TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    logged_idx  INTEGER NOT NULL,
    envelope_sha256 BLOB NOT NULL
);
