-- Deliveries are a queue: every step of every delivery updates its row,
-- leaving a dead version behind, and each claim counts the rows in flight
-- and locks the due ones, walking past whatever dead versions are still
-- there. Vacuum this table after 1% of it has changed rather than the
-- default 20%, and without the cost-based pauses.
ALTER TABLE deliveries SET (
    autovacuum_vacuum_scale_factor = 0.01,
    autovacuum_vacuum_threshold = 1000,
    autovacuum_vacuum_cost_delay = 0
);
