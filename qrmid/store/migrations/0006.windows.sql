-- Time windows admins create on a resource: reservations for some users, accounts or groups, and maintenance
-- windows. Times are epoch seconds; the holders' names are JSON arrays of text. A window is deleted once closed.
CREATE TABLE IF NOT EXISTS windows (
    id TEXT PRIMARY KEY,
    resource TEXT NOT NULL,
    kind TEXT NOT NULL,
    start_at DOUBLE PRECISION NOT NULL,
    end_at DOUBLE PRECISION NOT NULL,
    users TEXT NOT NULL,
    accounts TEXT NOT NULL,
    groups_ TEXT NOT NULL,
    reason TEXT NOT NULL);
