-- The values of each logged reading measured while its sensor was assigned to a patient, for
-- the web app's charts and the ward overview: one nullable column per vital sign of SPEC.md §4
-- on the reading's own row (so the existing (patient, measured_at) index serves the charts and
-- a reading costs 8 bytes per value, not a row per value). Derived, like the rest of the row:
-- the evidence is entries.leaf_data. Written with the reading in the sequencer's transaction;
-- rows logged before this migration are filled in once at start-up (log_meta
-- 'measurements_filled'); pruning a reading clears them.
ALTER TABLE readings ADD COLUMN v_body_temperature DOUBLE PRECISION;
ALTER TABLE readings ADD COLUMN v_heart_rate DOUBLE PRECISION;
ALTER TABLE readings ADD COLUMN v_spo2 DOUBLE PRECISION;
ALTER TABLE readings ADD COLUMN v_respiratory_rate DOUBLE PRECISION;
ALTER TABLE readings ADD COLUMN v_systolic DOUBLE PRECISION;
ALTER TABLE readings ADD COLUMN v_diastolic DOUBLE PRECISION;
