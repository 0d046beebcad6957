-- The values of each logged reading measured while its sensor was assigned to a patient, for
-- the web app's charts and the ward overview. Derived (like `readings`): the evidence is
-- entries.leaf_data. Written with the reading in the sequencer's transaction; rows logged
-- before this migration are filled in once at start-up (log_meta 'measurements_backfilled').
CREATE TABLE measurements (
    idx          BIGINT NOT NULL,
    code         TEXT NOT NULL,
    patient      TEXT NOT NULL,
    measured_at  BIGINT NOT NULL,
    value        DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (idx, code)
);
CREATE INDEX measurements_by_patient ON measurements (patient, code, measured_at);
