-- The registry is rebuilt at start by replaying the logged registry events through the
-- registry state machine (provenance-core); the derived registry tables are no longer kept.
DROP TABLE registry_keys;
DROP TABLE registry_bindings;
DROP TABLE registry_assignments;
DROP TABLE registry_revocations;
CREATE INDEX entries_registry ON entries (idx) WHERE kind = 2;
