-- Issue #13: a replay starts a new round of attempts without renumbering them. Attempt numbers
-- keep counting (the attempts table's key never collides); the retry budget counts from the
-- round's first attempt.
ALTER TABLE webhook_outbox ADD COLUMN round_start INTEGER NOT NULL DEFAULT 0;
