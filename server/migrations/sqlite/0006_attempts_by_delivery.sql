-- `delivery show` reads one delivery's attempts; without this it scanned them all.
CREATE INDEX attempts_by_delivery ON attempts (delivery_id, id);
