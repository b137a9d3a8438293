-- The health check writes here: only a real write shows a full disk.
CREATE TABLE health_probe (
    id         INTEGER PRIMARY KEY,
    checked_at INTEGER NOT NULL
);
