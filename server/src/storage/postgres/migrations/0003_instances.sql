-- Flagstaff's schema, version 3: the SDK instances of every replica (docs/storage.md).
--
-- Each flagstaffd process sharing the database is a replica with an id of its own, random at
-- each start. It writes the SDK instances whose streams it serves (at most every 100 ms, the
-- ones that changed) and refreshes its row in `replicas`, so that every replica can list every
-- instance and tell when one has applied a revision. A replica that has not written for 30 s
-- has its instances shown as disconnected since its last write.

CREATE TABLE replicas (
    id text COLLATE "C" PRIMARY KEY,
    -- When the replica last wrote, by the database's clock.
    seen_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE sdk_instances (
    environment text COLLATE "C" NOT NULL REFERENCES environments (key) ON DELETE CASCADE,
    -- The id the SDK instance gave in its Subscribe.
    instance_id text COLLATE "C" NOT NULL,
    -- The replica that serves, or served, its streams.
    replica text COLLATE "C" NOT NULL REFERENCES replicas (id) ON DELETE CASCADE,
    application text NOT NULL,
    sdk_version text NOT NULL,
    host text NOT NULL,
    -- The name of the token its stream authenticated with.
    token text NOT NULL,
    -- Its open Watch streams on that replica.
    streams integer NOT NULL CHECK (streams >= 0),
    -- Unix milliseconds, by the replica's clock.
    connected_ms bigint NOT NULL,
    -- NULL while a stream is open.
    disconnected_ms bigint,
    -- The epoch and revision it last acknowledged (empty and 0 before its first), and when.
    epoch text NOT NULL,
    applied_revision bigint NOT NULL,
    applied_ms bigint NOT NULL,
    PRIMARY KEY (environment, instance_id, replica)
);
CREATE INDEX sdk_instances_replica ON sdk_instances (replica);
