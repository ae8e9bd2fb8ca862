-- API keys of the control plane server (`corral.governance.keys`, `corral keys`).
-- The secret is never stored: `secret_hash` is its SHA-256 (a key is 256 random bits).
CREATE TABLE api_keys (
    key_id        TEXT PRIMARY KEY,
    tenant        TEXT NOT NULL,
    role          TEXT NOT NULL,
    principal     TEXT NOT NULL,
    name          TEXT NOT NULL,
    secret_hash   TEXT NOT NULL,
    created_at    DOUBLE PRECISION NOT NULL,
    created_by    TEXT NOT NULL,
    expires_at    DOUBLE PRECISION,
    last_used_at  DOUBLE PRECISION,
    revoked_at    DOUBLE PRECISION
);

CREATE INDEX api_keys_by_tenant ON api_keys (tenant, created_at);
