-- The public registry feed of a time-sharded log (GET /v1/log/registry-entries?shard=n) lists a
-- shard's start and carried registry events with its registry events: their own partial index,
-- so a page over a range of readings never scans them.
CREATE INDEX entries_registry_and_shards ON entries (idx) WHERE kind IN (2, 4, 5);
