-- Retry policies beyond linear, response handling options, flow control and
-- the circuit breaker, per target.
ALTER TABLE targets ADD COLUMN retry_factor REAL NOT NULL DEFAULT 2.0;
ALTER TABLE targets ADD COLUMN retry_max_interval_ms INTEGER NOT NULL DEFAULT 3600000;
ALTER TABLE targets ADD COLUMN retry_schedule TEXT NOT NULL DEFAULT ''; -- delays in ms, comma-separated
ALTER TABLE targets ADD COLUMN follow_redirects INTEGER NOT NULL DEFAULT 0;
ALTER TABLE targets ADD COLUMN retry_on_4xx INTEGER NOT NULL DEFAULT 0;
ALTER TABLE targets ADD COLUMN max_in_flight INTEGER NOT NULL DEFAULT 32;
ALTER TABLE targets ADD COLUMN rate_count INTEGER; -- NULL: no rate limit
ALTER TABLE targets ADD COLUMN rate_period_ms INTEGER;
ALTER TABLE targets ADD COLUMN break_after INTEGER NOT NULL DEFAULT 10;
-- NULL while enabled; why it was disabled otherwise (e.g. 410 Gone).
ALTER TABLE targets ADD COLUMN disabled_reason TEXT;
-- Circuit breaker: consecutive failed attempts, and while open, until when
-- no delivery is sent; breaker_opens counts openings in a row (cool-down doubles).
ALTER TABLE targets ADD COLUMN consecutive_failures INTEGER NOT NULL DEFAULT 0;
ALTER TABLE targets ADD COLUMN breaker_until INTEGER;
ALTER TABLE targets ADD COLUMN breaker_opens INTEGER NOT NULL DEFAULT 0;

CREATE INDEX deliveries_by_target_due ON deliveries (target_id, next_run_at) WHERE state = 'pending';
CREATE INDEX deliveries_failed ON deliveries (target_id, updated_at) WHERE state = 'failed';
