-- Issue #15: the witness cosignatures collected for each checkpoint (signature lines appended to
-- the log-signed note when it is served) and how many configured witnesses they are from. They
-- only grow: a checkpoint's cosignatures are replaced only by a set with more cosigners.
ALTER TABLE checkpoints ADD COLUMN cosignatures TEXT NOT NULL DEFAULT '';
ALTER TABLE checkpoints ADD COLUMN cosigners INTEGER NOT NULL DEFAULT 0;
