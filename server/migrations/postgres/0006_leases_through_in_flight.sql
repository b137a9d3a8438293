-- As on SQLite (migration 0008 there): expired leases are found through
-- `deliveries_in_flight`, which holds only the deliveries in flight (at
-- most the attempts running, however long the history), so the lease's
-- own index goes. Every delivery is written in flight once, and its row
-- entered this index then: one index entry fewer per delivery.
DROP INDEX IF EXISTS deliveries_leased;
