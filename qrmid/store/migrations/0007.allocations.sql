-- Allocations admins set: budgets of QPU-seconds and shots per account and period on a group of resources (a JSON
-- array of names, empty for every resource). Usage is not stored here: members sum the ended tasks (below).
CREATE TABLE IF NOT EXISTS allocations (
    account TEXT NOT NULL,
    resources TEXT NOT NULL,
    limit_kind TEXT NOT NULL,
    qpu_seconds DOUBLE PRECISION NOT NULL,
    shots BIGINT NOT NULL,
    period TEXT NOT NULL,
    at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (account, resources));

-- The usage of the records retention drops, summed by the members' local day, so allocations still count it.
CREATE TABLE IF NOT EXISTS usage_days (
    account TEXT NOT NULL,
    resource TEXT NOT NULL,
    day TEXT NOT NULL,
    qpu_seconds DOUBLE PRECISION NOT NULL,
    shots BIGINT NOT NULL,
    PRIMARY KEY (account, resource, day));

-- The warnings a task was accepted with (e.g. over a soft allocation): a JSON array of text, '' for none.
ALTER TABLE tasks ADD COLUMN IF NOT EXISTS warnings TEXT NOT NULL DEFAULT '';
