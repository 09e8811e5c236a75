-- Lease modes: a lease is shared (the default) or exclusive, and may keep slots free for its tasks (min_slots).
-- Exclusive Acquires waiting on any member are listed in exclusive_waits, so that every member holds the resource's
-- tasks back and grants in the order asked; a grant checks both tables under a per-resource advisory lock.
ALTER TABLE leases ADD COLUMN IF NOT EXISTS mode TEXT NOT NULL DEFAULT 'shared';
ALTER TABLE leases ADD COLUMN IF NOT EXISTS min_slots INTEGER NOT NULL DEFAULT 0;
CREATE INDEX IF NOT EXISTS leases_exclusive ON leases (resource) WHERE mode = 'exclusive';

CREATE TABLE IF NOT EXISTS exclusive_waits (
    id TEXT PRIMARY KEY,
    resource TEXT NOT NULL,
    member TEXT NOT NULL,
    asked_at DOUBLE PRECISION NOT NULL,
    until DOUBLE PRECISION NOT NULL);
CREATE INDEX IF NOT EXISTS exclusive_waits_resource ON exclusive_waits (resource, asked_at);
