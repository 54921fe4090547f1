-- Tether schema 3: rate limits and budget ledgers (tether.governance).

-- GCRA state: one theoretical arrival time (microseconds) per limit key.
CREATE TABLE rate_limits (
    key    TEXT PRIMARY KEY,
    tat_us INTEGER NOT NULL
) WITHOUT ROWID;

-- Budget balances (tokens, calls, micro-USD), one row per scope.
CREATE TABLE ledger (
    scope         TEXT PRIMARY KEY,
    balance       INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL
) WITHOUT ROWID;

-- Every post applied, by id: a post is applied once, however often a run asks again.
CREATE TABLE ledger_posts (
    post_id      TEXT PRIMARY KEY,
    entries_json TEXT NOT NULL,
    at_ms        INTEGER NOT NULL
) WITHOUT ROWID;
