-- The evidence store: predictions, labels, and the counts exported from them. One schema for
-- SQLite and PostgreSQL (sqlx's Any driver runs it on both): no serial columns, no dialect types;
-- booleans are BIGINT 0 or 1 (the Any driver reads no SQLite BOOLEAN).

-- Every prediction a sidecar served, once (a retried batch inserts nothing).
CREATE TABLE predictions (
    namespace TEXT NOT NULL,
    rollout TEXT NOT NULL,
    request_id TEXT NOT NULL,
    version TEXT NOT NULL,
    model TEXT NOT NULL,
    role TEXT NOT NULL,
    time_ms BIGINT NOT NULL,
    decision BIGINT NOT NULL,
    score DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (namespace, rollout, request_id, version)
);
CREATE INDEX predictions_by_time ON predictions (time_ms);

-- Every label, once: the first label of a request id stands.
CREATE TABLE labels (
    namespace TEXT NOT NULL,
    rollout TEXT NOT NULL,
    request_id TEXT NOT NULL,
    label BIGINT NOT NULL,
    time_ms BIGINT NOT NULL,
    received_ms BIGINT NOT NULL,
    -- Joined to at least one prediction (else it waits for one, within --label-wait).
    joined BIGINT NOT NULL,
    PRIMARY KEY (namespace, rollout, request_id)
);
CREATE INDEX labels_waiting ON labels (joined, received_ms);
CREATE INDEX labels_by_time ON labels (received_ms);

-- The exported counts, changed in the transaction that changes what they count: a restart loses
-- none and counts none twice. `series` and `detail` come from fixed lists (see tally.rs); `peer`
-- is the stable version of a matched request's candidate, else ''.
CREATE TABLE counts (
    namespace TEXT NOT NULL,
    rollout TEXT NOT NULL,
    model TEXT NOT NULL,
    version TEXT NOT NULL,
    role TEXT NOT NULL,
    series TEXT NOT NULL,
    detail TEXT NOT NULL,
    peer TEXT NOT NULL,
    n BIGINT NOT NULL,
    total DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (namespace, rollout, model, version, role, series, detail, peer)
);

-- Counts that belong to no version (labels dropped), per namespace and rollout.
CREATE TABLE dropped (
    namespace TEXT NOT NULL,
    rollout TEXT NOT NULL,
    reason TEXT NOT NULL,
    n BIGINT NOT NULL,
    PRIMARY KEY (namespace, rollout, reason)
);
