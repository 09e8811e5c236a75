-- Lease modes: a lease is shared (the default) or exclusive, and may keep slots free for its tasks (min_slots).
-- At most one live exclusive lease per resource is taken under a per-resource advisory lock at grant.
ALTER TABLE leases ADD COLUMN IF NOT EXISTS mode TEXT NOT NULL DEFAULT 'shared';
ALTER TABLE leases ADD COLUMN IF NOT EXISTS min_slots INTEGER NOT NULL DEFAULT 0;
CREATE INDEX IF NOT EXISTS leases_exclusive ON leases (resource) WHERE mode = 'exclusive';
