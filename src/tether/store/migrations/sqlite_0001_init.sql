-- Tether schema 1: runs, their journals, and signals sent to them.
CREATE TABLE runs (
    run_id              TEXT PRIMARY KEY,
    agent               TEXT NOT NULL,
    agent_version       TEXT NOT NULL,
    agent_ref           TEXT NOT NULL,
    input_json          TEXT NOT NULL,
    status              TEXT NOT NULL,
    result_json         TEXT,
    error_json          TEXT,
    thread_id           TEXT,
    parent_run_id       TEXT,
    tenant              TEXT NOT NULL,
    principal           TEXT NOT NULL,
    owner               TEXT,
    fence               INTEGER NOT NULL DEFAULT 0,
    lease_expires_at_ms INTEGER NOT NULL DEFAULT 0,
    wake_at_ms          INTEGER,
    waiting_for         TEXT,
    created_at_ms       INTEGER NOT NULL,
    updated_at_ms       INTEGER NOT NULL,
    finished_at_ms      INTEGER
);
CREATE INDEX runs_by_status ON runs (status, wake_at_ms);
CREATE INDEX runs_by_owner ON runs (owner) WHERE owner IS NOT NULL;
CREATE INDEX runs_by_created ON runs (created_at_ms DESC, run_id DESC);
CREATE INDEX runs_by_thread ON runs (thread_id, finished_at_ms) WHERE thread_id IS NOT NULL;

-- One row per effect; a row goes from 'started' (an intent) to 'ok' or 'error', never back.
-- A rowid table with a unique index, not WITHOUT ROWID: rows are appended at the end of the
-- table (many concurrent runs insert in time order, not scattered over run ids), and the
-- index entries that are scattered are small; measured 3x faster to insert at 10,000 runs.
CREATE TABLE journal (
    record_id      INTEGER PRIMARY KEY,
    run_id         TEXT NOT NULL,
    seq            INTEGER NOT NULL,
    kind           TEXT NOT NULL,
    name           TEXT NOT NULL,
    digest         TEXT NOT NULL,
    state          TEXT NOT NULL,
    value_json     TEXT,
    attempts       INTEGER NOT NULL,
    started_at_ms  INTEGER NOT NULL,
    finished_at_ms INTEGER,
    detail_json    TEXT,
    UNIQUE (run_id, seq)
);

CREATE TABLE signals (
    signal_id    INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id       TEXT NOT NULL,
    name         TEXT NOT NULL,
    data_json    TEXT,
    sent_at_ms   INTEGER NOT NULL,
    consumed_seq INTEGER
);
CREATE INDEX signals_undelivered ON signals (run_id, name, signal_id) WHERE consumed_seq IS NULL;
