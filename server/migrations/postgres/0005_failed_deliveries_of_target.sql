-- `delivery list --state failed --target-id ID` pages one target's failed
-- deliveries newest first. Through `deliveries_failed_by_id` that walks
-- every failed delivery newer than the target's (all of them, when the
-- target has none), and through `deliveries_by_target` it reads all of the
-- target's failed rows and sorts them: about 20 ms either way with 100,000
-- failed. Only failed rows enter this index, as with the other two.
-- (SQLite needs none: its `deliveries_by_target` holds the id, as every
-- index of a table without rowid does, and serves the order.)
CREATE INDEX deliveries_failed_of_target ON deliveries (target_id, id) WHERE state = 'failed';
