-- Tether schema 2: the audit trail and approvals (tether.governance).

-- One hash chain per tenant: hash = sha256(previous hash || body). Rows are only ever
-- appended; `tether audit verify` recomputes every link.
CREATE TABLE audit (
    tenant TEXT NOT NULL,
    idx    INTEGER NOT NULL,
    body   TEXT NOT NULL,
    hash   TEXT NOT NULL,
    PRIMARY KEY (tenant, idx)
) WITHOUT ROWID;

-- A tool call held for a person; approval_id is '<run_id>:<seq>'.
CREATE TABLE approvals (
    approval_id     TEXT PRIMARY KEY,
    run_id          TEXT NOT NULL,
    seq             INTEGER NOT NULL,
    tenant          TEXT NOT NULL,
    principal       TEXT NOT NULL,
    agent           TEXT NOT NULL,
    tool            TEXT NOT NULL,
    args_json       TEXT NOT NULL,
    message_json    TEXT,
    policies_json   TEXT NOT NULL,
    status          TEXT NOT NULL,
    requested_at_ms INTEGER NOT NULL,
    expires_at_ms   INTEGER NOT NULL,
    decided_by      TEXT,
    reason          TEXT,
    decided_at_ms   INTEGER
);
CREATE INDEX approvals_by_status ON approvals (status, requested_at_ms);
