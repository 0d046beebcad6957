-- Issue #14: tokens that end. Each token gets a public id (to list, revoke and rotate it by),
-- an expiry, a revocation, its last use, who created it and, for a gateway token, the gateway it
-- speaks for ('*': any gateway, the behaviour of tokens made before this migration).
ALTER TABLE tokens ADD COLUMN id TEXT;
UPDATE tokens SET id = 'tok_' || substr(encode(token_hash, 'hex'), 1, 16);
ALTER TABLE tokens ALTER COLUMN id SET NOT NULL;
CREATE UNIQUE INDEX tokens_id ON tokens (id);
CREATE INDEX tokens_created ON tokens (created_at, id);
-- Tokens made before expiry existed end 90 days after this migration.
ALTER TABLE tokens ADD COLUMN expires_at BIGINT NOT NULL DEFAULT 0;
UPDATE tokens SET expires_at = (extract(epoch FROM now()) * 1000)::BIGINT + 7776000000;
ALTER TABLE tokens ADD COLUMN created_by TEXT NOT NULL DEFAULT 'cli';
ALTER TABLE tokens ADD COLUMN gateway_id TEXT;
UPDATE tokens SET gateway_id = '*' WHERE role = 'gateway';
ALTER TABLE tokens ADD COLUMN revoked_at BIGINT;
ALTER TABLE tokens ADD COLUMN revoked_by TEXT;
ALTER TABLE tokens ADD COLUMN last_used_at BIGINT;
