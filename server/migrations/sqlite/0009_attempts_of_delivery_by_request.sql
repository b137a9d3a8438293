-- Every attempt row was written into five b-trees, and each of them costs
-- at least a page in the WAL at every commit that adds attempts. One of
-- them can go: `delivery show` reads a delivery's attempts through the
-- request's (attempts_by_request, a handful of rows per request), since it
-- has read the delivery, and with it the request's id, first.
DROP INDEX attempts_by_delivery;
