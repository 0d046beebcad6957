-- Archival export jobs (FHIR Bulk Data $export pattern) and pruned reading payloads.

CREATE TABLE export_jobs (
    id               TEXT PRIMARY KEY,
    state            TEXT NOT NULL,     -- queued | running | complete | failed | cancelled
    request          TEXT NOT NULL,     -- the kick-off request (path and query)
    requested_by     TEXT NOT NULL,     -- token name
    patient          TEXT,              -- a per-patient export
    types            TEXT NOT NULL,     -- JSON array of resource types
    from_index       BIGINT NOT NULL,   -- first log index considered
    to_index         BIGINT NOT NULL,   -- the cut: the size of checkpoint
    checkpoint       TEXT NOT NULL,     -- the signed checkpoint the export was cut at
    transaction_time BIGINT NOT NULL,   -- logging time of the last entry before the cut
    next_index       BIGINT NOT NULL,   -- resume point
    progress         TEXT NOT NULL,     -- JSON: per output file, count and bytes written
    manifest         TEXT,              -- the Bulk Data manifest, once complete
    error            TEXT,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL,
    claimed_until    BIGINT NOT NULL,   -- a worker holds it until then
    acknowledged_at  BIGINT             -- the archive confirmed the download
);
CREATE INDEX export_jobs_by_state ON export_jobs (state, created_at);

-- Readings whose payload was pruned after an acknowledged export; the leaf hash stays in the
-- tiles, so every proof still verifies.
CREATE TABLE pruned_readings (
    idx        BIGINT PRIMARY KEY,
    export_id  TEXT NOT NULL,
    pruned_at  BIGINT NOT NULL
);
