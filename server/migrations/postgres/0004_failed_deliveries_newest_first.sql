-- As on SQLite (migration 0010 there): `delivery list --state failed` pages
-- failed deliveries newest first. Only failed rows enter this index, so the
-- other steps of a delivery never write it, and the list reads the newest
-- of them however long the history and however many have failed.
CREATE INDEX deliveries_failed_by_id ON deliveries (id) WHERE state = 'failed';
