-- The FHIR facade's Observation search without a patient or device (an integration engine's
-- "everything measured since …"), in (measured-at, log index) order, both directions.
CREATE INDEX readings_by_time ON readings (measured_at, idx);
