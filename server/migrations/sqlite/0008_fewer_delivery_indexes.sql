-- Every index on deliveries that holds the state is written again at each
-- step of a delivery (pending, in flight, delivered), and the step's
-- commit waits for those pages. Three of them can go:
-- deliveries_due was read by no query;
DROP INDEX deliveries_due;
-- leases are found through deliveries_in_flight, which holds only what is
-- in flight (a few hundred rows at most) however long the history;
DROP INDEX deliveries_leased;
-- and a request's deliveries need only the request's id.
DROP INDEX deliveries_by_request;
CREATE INDEX deliveries_of_request ON deliveries (request_id);
