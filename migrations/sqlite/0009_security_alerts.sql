-- Issue #14: security alerts of several kinds (equivocation, a revoked key used, repeated bad
-- signatures through one gateway), de-duplicated: one row per key (the kind, its subject and,
-- for repeated events, the hour), counting occurrences. Rejections are recorded per batch and
-- reason with a count, so a flood of bad items writes a bounded number of rows.
ALTER TABLE security_alerts ADD COLUMN dedup_key TEXT;
UPDATE security_alerts SET dedup_key = kind || ':' || sensor_id || ':' || seq || ':' || id;
CREATE UNIQUE INDEX security_alerts_key ON security_alerts (dedup_key);
ALTER TABLE security_alerts ADD COLUMN subject TEXT NOT NULL DEFAULT '';
UPDATE security_alerts SET subject = sensor_id;
ALTER TABLE security_alerts ADD COLUMN detail TEXT NOT NULL DEFAULT '';
ALTER TABLE security_alerts ADD COLUMN count INTEGER NOT NULL DEFAULT 1;
ALTER TABLE security_alerts ADD COLUMN last_at INTEGER NOT NULL DEFAULT 0;
UPDATE security_alerts SET last_at = at;
ALTER TABLE rejections ADD COLUMN count INTEGER NOT NULL DEFAULT 1;
