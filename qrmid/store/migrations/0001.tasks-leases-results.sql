-- What the SQLite journal holds: tasks in queue order, their transitions, request ids, remote references,
-- results and logs, leases, and the resources an admin drained. Written so that a run cut short can run
-- again (IF NOT EXISTS).
CREATE TABLE IF NOT EXISTS tasks (
    seq BIGSERIAL UNIQUE,
    id TEXT PRIMARY KEY,
    resource TEXT NOT NULL,
    owner TEXT NOT NULL,
    account TEXT NOT NULL DEFAULT '',
    priority TEXT NOT NULL DEFAULT '',
    payload_kind TEXT NOT NULL,
    payload BYTEA NOT NULL,
    shots BIGINT NOT NULL,
    lease_id TEXT NOT NULL,
    slurm_job_id TEXT NOT NULL,
    client_request_id TEXT NOT NULL,
    state TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    started_at DOUBLE PRECISION,
    ended_at DOUBLE PRECISION,
    reason TEXT NOT NULL DEFAULT '');
CREATE INDEX IF NOT EXISTS tasks_ended ON tasks (ended_at) WHERE ended_at IS NOT NULL;

CREATE TABLE IF NOT EXISTS transitions (
    task_id TEXT NOT NULL REFERENCES tasks ON DELETE CASCADE,
    state TEXT NOT NULL,
    at DOUBLE PRECISION NOT NULL,
    reason TEXT NOT NULL,
    remote_ref TEXT,
    PRIMARY KEY (task_id, state, at));

CREATE TABLE IF NOT EXISTS request_ids (
    owner TEXT NOT NULL,
    client_request_id TEXT NOT NULL,
    task_id TEXT NOT NULL REFERENCES tasks ON DELETE CASCADE,
    PRIMARY KEY (owner, client_request_id));

CREATE TABLE IF NOT EXISTS remote_refs (
    task_id TEXT PRIMARY KEY REFERENCES tasks ON DELETE CASCADE,
    remote_ref TEXT NOT NULL,
    released BOOLEAN NOT NULL DEFAULT false);

CREATE TABLE IF NOT EXISTS results (
    task_id TEXT PRIMARY KEY REFERENCES tasks ON DELETE CASCADE,
    data BYTEA,
    content_type TEXT,
    bytes BIGINT NOT NULL DEFAULT 0,
    logs TEXT NOT NULL DEFAULT '');

CREATE TABLE IF NOT EXISTS leases (
    id TEXT PRIMARY KEY,
    token TEXT NOT NULL,
    resource TEXT NOT NULL,
    owner TEXT NOT NULL,
    slurm_job_id TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL,
    account TEXT NOT NULL DEFAULT '');

CREATE TABLE IF NOT EXISTS drains (
    resource TEXT PRIMARY KEY,
    reason TEXT NOT NULL,
    at DOUBLE PRECISION NOT NULL);
