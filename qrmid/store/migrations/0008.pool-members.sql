-- A pool's task: the member resource it is bound to ('' while it is queued on the pool), and whether its caller
-- allowed the pool's fallback member to run it.
ALTER TABLE tasks ADD COLUMN IF NOT EXISTS member TEXT NOT NULL DEFAULT '';
ALTER TABLE tasks ADD COLUMN IF NOT EXISTS allow_fallback BOOLEAN NOT NULL DEFAULT false;
