-- As on SQLite (migration 0009 there): `delivery show` reads a delivery's
-- attempts through the request's index, which every attempt row already
-- writes, so attempt rows write one index fewer.
DROP INDEX IF EXISTS attempts_by_delivery;
