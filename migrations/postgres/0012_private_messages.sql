-- Private mode (issue #17): the query copy of each logged private message. Only what the
-- gateway layer exposes — household, gateway, its message number, received-at — and the hash
-- of the envelope; the ciphertext is entries.leaf_data, and nothing here or anywhere in the
-- service decrypts it. The household feed reads (household, idx).
CREATE TABLE private_messages (
    idx              BIGINT PRIMARY KEY REFERENCES entries (idx),
    household        TEXT NOT NULL,
    gateway_id       TEXT NOT NULL,
    msg_seq          BIGINT NOT NULL,
    received_at      BIGINT NOT NULL,
    envelope_sha256  BYTEA NOT NULL,
    UNIQUE (gateway_id, msg_seq)
);
CREATE INDEX private_by_household ON private_messages (household, idx);
