-- Retention removes a request once none of its deliveries is unfinished;
-- this finds a request's deliveries without scanning them all.
CREATE INDEX deliveries_by_request ON deliveries (request_id, state);
