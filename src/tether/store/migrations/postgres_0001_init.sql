-- Tether schema 1 on PostgreSQL: runs, their journals, signals, and the history of claims.
-- JSON columns hold JSON text, as on SQLite: the runtime reads and writes text, and the server
-- never needs to look inside (jsonb would parse every record on the hot path for nothing).
CREATE TABLE runs (
    run_id              text PRIMARY KEY,
    agent               text NOT NULL,
    agent_version       text NOT NULL,
    agent_ref           text NOT NULL,
    input_json          text NOT NULL,
    status              text NOT NULL,
    result_json         text,
    error_json          text,
    thread_id           text,
    parent_run_id       text,
    tenant              text NOT NULL,
    principal           text NOT NULL,
    owner               text,
    fence               bigint NOT NULL DEFAULT 0,
    lease_expires_at_ms bigint NOT NULL DEFAULT 0,
    wake_at_ms          bigint,
    waiting_for         text,
    created_at_ms       bigint NOT NULL,
    updated_at_ms       bigint NOT NULL,
    finished_at_ms      bigint
);
-- Claims look only at runs that are not finished; a partial index stays small however many
-- completed runs the table keeps.
CREATE INDEX runs_claimable ON runs (status, updated_at_ms)
    WHERE status IN ('pending', 'waiting', 'running');
CREATE INDEX runs_by_owner ON runs (owner) WHERE owner IS NOT NULL;
CREATE INDEX runs_by_created ON runs (created_at_ms DESC, run_id DESC);
CREATE INDEX runs_by_thread ON runs (thread_id, finished_at_ms) WHERE thread_id IS NOT NULL;

-- One row per effect; a row goes from 'started' (an intent) to 'ok' or 'error', never back.
-- ``fence`` is the claim it was written under: with ``claims`` below it shows which worker
-- wrote each record, and that no two workers wrote for a run under the same claim.
CREATE TABLE journal (
    run_id         text NOT NULL,
    seq            integer NOT NULL,
    kind           text NOT NULL,
    name           text NOT NULL,
    digest         text NOT NULL,
    state          text NOT NULL,
    value_json     text,
    attempts       integer NOT NULL,
    started_at_ms  bigint NOT NULL,
    finished_at_ms bigint,
    detail_json    text,
    fence          bigint NOT NULL,
    PRIMARY KEY (run_id, seq)
);

CREATE TABLE signals (
    signal_id    bigserial PRIMARY KEY,
    run_id       text NOT NULL,
    name         text NOT NULL,
    data_json    text,
    sent_at_ms   bigint NOT NULL,
    consumed_seq integer
);
CREATE INDEX signals_undelivered ON signals (run_id, name, signal_id) WHERE consumed_seq IS NULL;

-- Every claim of a run: the fence it handed out, to whom, and when.
CREATE TABLE claims (
    run_id        text NOT NULL,
    fence         bigint NOT NULL,
    owner         text NOT NULL,
    claimed_at_ms bigint NOT NULL,
    PRIMARY KEY (run_id, fence)
);
