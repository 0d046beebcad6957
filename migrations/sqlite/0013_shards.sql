-- Issue #18: time-sharded logs. Each shard is a log of its own (its own tree, tiles and
-- checkpoints, origin `<origin>/<period>`); entries keep one index space (a shard's entry `i`
-- is `entries.idx = base + i`). Shard 0 is the log as first started (origin `<origin>`).
CREATE TABLE shards (
    number      INTEGER PRIMARY KEY,
    name        TEXT NOT NULL,
    origin      TEXT NOT NULL UNIQUE,
    start_ms    INTEGER NOT NULL,
    end_ms      INTEGER NOT NULL,
    grace_ms    INTEGER NOT NULL,
    base        INTEGER NOT NULL,
    -- Set once, when the shard is closed: its final checkpoint's size (also in `checkpoints`).
    final_size  INTEGER,
    closed_at   INTEGER
);

-- SQLite cannot change a primary key: the tables are rebuilt with the shard in it.
CREATE TABLE tiles_sharded (
    shard   INTEGER NOT NULL DEFAULT 0,
    level   INTEGER NOT NULL,
    idx     INTEGER NOT NULL,
    width   INTEGER NOT NULL,
    hashes  BLOB NOT NULL,
    PRIMARY KEY (shard, level, idx)
);
INSERT INTO tiles_sharded (shard, level, idx, width, hashes)
    SELECT 0, level, idx, width, hashes FROM tiles;
DROP TABLE tiles;
ALTER TABLE tiles_sharded RENAME TO tiles;

CREATE TABLE checkpoints_sharded (
    shard         INTEGER NOT NULL DEFAULT 0,
    size          INTEGER NOT NULL,
    root          BLOB NOT NULL,
    note          TEXT NOT NULL,
    published_at  INTEGER NOT NULL,
    cosignatures  TEXT NOT NULL DEFAULT '',
    cosigners     INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (shard, size)
);
INSERT INTO checkpoints_sharded (shard, size, root, note, published_at, cosignatures, cosigners)
    SELECT 0, size, root, note, published_at, cosignatures, cosigners FROM checkpoints;
DROP TABLE checkpoints;
ALTER TABLE checkpoints_sharded RENAME TO checkpoints;
