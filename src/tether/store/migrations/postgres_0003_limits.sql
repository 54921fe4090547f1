-- Tether schema 3 on PostgreSQL: rate limits and budget ledgers (tether.governance).

-- GCRA state: one theoretical arrival time (microseconds) per limit key.
CREATE TABLE rate_limits (
    key    text PRIMARY KEY,
    tat_us bigint NOT NULL
);

-- Budget balances (tokens, calls, micro-USD), one row per scope.
CREATE TABLE ledger (
    scope         text PRIMARY KEY,
    balance       bigint NOT NULL,
    updated_at_ms bigint NOT NULL
);

-- Every post applied, by id: a post is applied once, however often a run asks again.
CREATE TABLE ledger_posts (
    post_id      text PRIMARY KEY,
    entries_json text NOT NULL,
    at_ms        bigint NOT NULL
);
