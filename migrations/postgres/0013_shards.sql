-- Issue #18: time-sharded logs. Each shard is a log of its own (its own tree, tiles and
-- checkpoints, origin `<origin>/<period>`); entries keep one index space (a shard's entry `i`
-- is `entries.idx = base + i`). Shard 0 is the log as first started (origin `<origin>`).
CREATE TABLE shards (
    number      BIGINT PRIMARY KEY,
    name        TEXT NOT NULL,
    origin      TEXT NOT NULL UNIQUE,
    start_ms    BIGINT NOT NULL,
    end_ms      BIGINT NOT NULL,
    grace_ms    BIGINT NOT NULL,
    base        BIGINT NOT NULL,
    -- Set once, when the shard is closed: its final checkpoint's size (also in `checkpoints`).
    final_size  BIGINT,
    closed_at   BIGINT
);

ALTER TABLE tiles ADD COLUMN shard BIGINT NOT NULL DEFAULT 0;
ALTER TABLE tiles DROP CONSTRAINT tiles_pkey;
ALTER TABLE tiles ADD PRIMARY KEY (shard, level, idx);

ALTER TABLE checkpoints ADD COLUMN shard BIGINT NOT NULL DEFAULT 0;
ALTER TABLE checkpoints DROP CONSTRAINT checkpoints_pkey;
ALTER TABLE checkpoints ADD PRIMARY KEY (shard, size);
