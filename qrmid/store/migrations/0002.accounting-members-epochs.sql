-- Accounting records that outlive the tasks' results, the cluster's members with their heartbeat, and one
-- leadership row per resource (its dispatcher and the epoch that fences a deposed one's writes).
CREATE TABLE IF NOT EXISTS usage (
    task_id TEXT PRIMARY KEY,
    resource TEXT NOT NULL,
    owner TEXT NOT NULL,
    account TEXT NOT NULL,
    slurm_job_id TEXT NOT NULL,
    lease_id TEXT NOT NULL,
    state TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    started_at DOUBLE PRECISION,
    ended_at DOUBLE PRECISION NOT NULL,
    shots BIGINT NOT NULL);
CREATE INDEX IF NOT EXISTS usage_ended ON usage (ended_at);

CREATE TABLE IF NOT EXISTS members (
    name TEXT PRIMARY KEY,
    started_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    heartbeat TIMESTAMPTZ NOT NULL DEFAULT now());

CREATE TABLE IF NOT EXISTS resource_epoch (
    resource TEXT PRIMARY KEY,
    dispatcher TEXT REFERENCES members (name),
    epoch BIGINT NOT NULL DEFAULT 0,
    since TIMESTAMPTZ NOT NULL DEFAULT now());
