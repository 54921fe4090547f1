-- Tether schema 2 on PostgreSQL: the audit trail and approvals (tether.governance).

-- One hash chain per tenant: hash = sha256(previous hash || body). Rows are only ever
-- appended; `tether audit verify` recomputes every link.
CREATE TABLE audit (
    tenant text NOT NULL,
    idx    bigint NOT NULL,
    body   text NOT NULL,
    hash   text NOT NULL,
    PRIMARY KEY (tenant, idx)
);

-- A tool call held for a person; approval_id is '<run_id>:<seq>'.
CREATE TABLE approvals (
    approval_id     text PRIMARY KEY,
    run_id          text NOT NULL,
    seq             integer NOT NULL,
    tenant          text NOT NULL,
    principal       text NOT NULL,
    agent           text NOT NULL,
    tool            text NOT NULL,
    args_json       text NOT NULL,
    message_json    text,
    policies_json   text NOT NULL,
    status          text NOT NULL,
    requested_at_ms bigint NOT NULL,
    expires_at_ms   bigint NOT NULL,
    decided_by      text,
    reason          text,
    decided_at_ms   bigint
);
CREATE INDEX approvals_by_status ON approvals (status, requested_at_ms);
