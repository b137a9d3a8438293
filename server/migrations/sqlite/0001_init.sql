-- Sources: senders of webhooks. The id appears in the ingest URL path.
CREATE TABLE sources (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    name          TEXT    NOT NULL,
    username      TEXT    NOT NULL,
    password      TEXT    NOT NULL,
    auth_provider TEXT,
    auth_secret   TEXT,
    status_code   INTEGER NOT NULL,
    content_type  TEXT    NOT NULL,
    content       BLOB    NOT NULL,
    created_at    INTEGER NOT NULL -- unix microseconds
);

-- Targets: the user's services that requests are relayed to.
CREATE TABLE targets (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    name              TEXT    NOT NULL,
    url               TEXT    NOT NULL,
    signing_secret    TEXT,
    retry_kind        TEXT    NOT NULL,
    retry_interval_ms INTEGER NOT NULL,
    max_attempts      INTEGER NOT NULL,
    timeout_ms        INTEGER NOT NULL,
    created_at        INTEGER NOT NULL
);

-- Routing: a target with no rows here receives from every source.
CREATE TABLE target_sources (
    target_id INTEGER NOT NULL REFERENCES targets (id) ON DELETE CASCADE,
    source_id INTEGER NOT NULL,
    PRIMARY KEY (target_id, source_id)
) WITHOUT ROWID;

-- Stored source requests. Ids are UUIDv7 in hex, so id order is time order.
CREATE TABLE requests (
    id          TEXT    PRIMARY KEY,
    source_id   INTEGER NOT NULL,
    method      TEXT    NOT NULL,
    path        TEXT    NOT NULL,
    query       TEXT    NOT NULL,
    headers     TEXT    NOT NULL, -- JSON array of [name, value]
    body        BLOB    NOT NULL,
    remote_addr TEXT    NOT NULL,
    created_at  INTEGER NOT NULL,
    resent_from TEXT
) WITHOUT ROWID;
CREATE INDEX requests_by_source ON requests (source_id, id);

-- One row per (request, target): the delivery state machine.
CREATE TABLE deliveries (
    id               TEXT    PRIMARY KEY,
    request_id       TEXT    NOT NULL,
    target_id        INTEGER NOT NULL,
    state            TEXT    NOT NULL, -- pending | in_flight | delivered | failed | cancelled
    attempt          INTEGER NOT NULL DEFAULT 0, -- attempts started
    next_run_at      INTEGER NOT NULL,
    lease_token      TEXT,
    lease_expires_at INTEGER,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX deliveries_due ON deliveries (next_run_at) WHERE state = 'pending';
CREATE INDEX deliveries_leased ON deliveries (lease_expires_at) WHERE state = 'in_flight';
CREATE INDEX deliveries_by_target ON deliveries (target_id, state);

-- One row per delivery attempt: the target.response log.
CREATE TABLE attempts (
    id                TEXT    PRIMARY KEY,
    delivery_id       TEXT    NOT NULL,
    request_id        TEXT    NOT NULL,
    source_id         INTEGER NOT NULL,
    target_id         INTEGER NOT NULL,
    url               TEXT    NOT NULL,
    attempt           INTEGER NOT NULL,
    state             TEXT    NOT NULL, -- retrying | delivered | failed
    status_code       INTEGER,
    response_headers  TEXT,
    response_body     BLOB,
    body_truncated    INTEGER NOT NULL DEFAULT 0,
    error_kind        TEXT,
    error_message     TEXT,
    elapsed_us        INTEGER NOT NULL,
    created_at        INTEGER NOT NULL,
    next_run_at       INTEGER
) WITHOUT ROWID;
CREATE INDEX attempts_by_target ON attempts (target_id, id);
CREATE INDEX attempts_by_source ON attempts (source_id, id);
CREATE INDEX attempts_by_request ON attempts (request_id, id);
