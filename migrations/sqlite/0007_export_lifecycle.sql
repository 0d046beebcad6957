-- Issue #14: an export's lifecycle. The acknowledgement names who acknowledged and the SHA-256
-- of the manifest the archive received; pruning needs a second person's approval (an admin
-- other than the acknowledger).
ALTER TABLE export_jobs ADD COLUMN acknowledged_by TEXT;
ALTER TABLE export_jobs ADD COLUMN manifest_sha256 TEXT;
ALTER TABLE export_jobs ADD COLUMN prune_approved_at INTEGER;
ALTER TABLE export_jobs ADD COLUMN prune_approved_by TEXT;
