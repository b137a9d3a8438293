-- Every claim counts the attempts in flight per target; this keeps that
-- count proportional to what is in flight, not to the whole history.
CREATE INDEX deliveries_in_flight ON deliveries (target_id) WHERE state = 'in_flight';
