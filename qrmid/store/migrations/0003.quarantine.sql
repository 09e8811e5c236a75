-- The task rows a member could not read back at start, moved aside with their raw values (JSON) so that the
-- daemon starts without them and an admin can list and inspect them.
CREATE TABLE IF NOT EXISTS quarantine (
    id BIGSERIAL PRIMARY KEY,
    source TEXT NOT NULL,
    row_id BIGINT NOT NULL,
    key TEXT NOT NULL,
    reason TEXT NOT NULL,
    at DOUBLE PRECISION NOT NULL,
    raw TEXT NOT NULL);
