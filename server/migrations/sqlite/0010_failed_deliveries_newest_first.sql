-- `delivery list --state failed` pages failed deliveries newest first. Only
-- failed rows enter this index, so the other steps of a delivery never
-- write it, and the list reads the newest of them however long the history
-- and however many have failed (it walked the whole table when none had).
CREATE INDEX deliveries_failed_by_id ON deliveries (id) WHERE state = 'failed';
