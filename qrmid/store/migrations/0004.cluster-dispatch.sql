-- Cluster mode: members share the database. Each resource gets the key of its dispatcher's advisory lock;
-- members may be told to hand over; cancellations asked of a resource's dispatcher wait in their own table;
-- a dispatcher publishes its resource's status and target for the members without its credentials; a request
-- id refers to its task only at commit, so that a member records it before the task and a second member taking
-- the same request id is refused by the primary key.
ALTER TABLE resource_epoch ADD COLUMN IF NOT EXISTS lock_key BIGSERIAL;
ALTER TABLE members ADD COLUMN IF NOT EXISTS handover BOOLEAN NOT NULL DEFAULT false;

CREATE TABLE IF NOT EXISTS cancels (
    task_id TEXT PRIMARY KEY REFERENCES tasks ON DELETE CASCADE,
    reason TEXT NOT NULL,
    at DOUBLE PRECISION NOT NULL);

CREATE TABLE IF NOT EXISTS resource_state (
    resource TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    reason TEXT NOT NULL,
    slots INTEGER NOT NULL,
    target TEXT,
    at DOUBLE PRECISION NOT NULL);

ALTER TABLE request_ids DROP CONSTRAINT IF EXISTS request_ids_task_id_fkey;
ALTER TABLE request_ids ADD CONSTRAINT request_ids_task_id_fkey FOREIGN KEY (task_id) REFERENCES tasks (id)
    ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED;
CREATE INDEX IF NOT EXISTS tasks_unfinished ON tasks (resource) WHERE ended_at IS NULL;
