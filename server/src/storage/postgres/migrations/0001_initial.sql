-- Flagstaff's schema, version 1 (docs/storage.md describes every table).
--
-- Documents are stored as the JSON text the server validated and encoded (`json`, never
-- `jsonb`, which would reorder keys and so variant order): a read returns exactly what was
-- accepted. Keys are compared byte by byte (COLLATE "C"), the order sled keeps them in.
-- Everything of an environment goes with it (ON DELETE CASCADE).

CREATE TABLE environments (
    key text COLLATE "C" PRIMARY KEY,
    -- The revision of the last committed change; the row is locked by every commit.
    revision bigint NOT NULL CHECK (revision >= 0),
    -- The environment's record (epoch, settings, revision) as JSON.
    record json NOT NULL
);

CREATE TABLE flags (
    environment text COLLATE "C" NOT NULL REFERENCES environments (key) ON DELETE CASCADE,
    key text COLLATE "C" NOT NULL,
    -- The flag document, `version` set.
    document json NOT NULL,
    PRIMARY KEY (environment, key)
);

CREATE TABLE segments (
    environment text COLLATE "C" NOT NULL REFERENCES environments (key) ON DELETE CASCADE,
    key text COLLATE "C" NOT NULL,
    -- The segment document with `included` and `excluded` empty: the keys are rows of
    -- segment_keys, so a patch of one key to a segment of 100,000 writes one row.
    document json NOT NULL,
    PRIMARY KEY (environment, key)
);

CREATE TABLE segment_keys (
    environment text COLLATE "C" NOT NULL,
    segment text COLLATE "C" NOT NULL,
    -- 'included' or 'excluded'.
    list text NOT NULL CHECK (list IN ('included', 'excluded')),
    key text COLLATE "C" NOT NULL,
    -- The key's place in its list: keys are listed in this order, and added keys go last.
    position bigint NOT NULL,
    PRIMARY KEY (environment, segment, list, key),
    FOREIGN KEY (environment, segment) REFERENCES segments (environment, key) ON DELETE CASCADE
);
CREATE INDEX segment_keys_order ON segment_keys (environment, segment, list, position);

CREATE TABLE changes (
    environment text COLLATE "C" NOT NULL REFERENCES environments (key) ON DELETE CASCADE,
    revision bigint NOT NULL,
    -- The change-log entry SDKs replay, as JSON.
    change json NOT NULL,
    PRIMARY KEY (environment, revision)
);

CREATE TABLE audit (
    environment text COLLATE "C" NOT NULL REFERENCES environments (key) ON DELETE CASCADE,
    revision bigint NOT NULL,
    time_ms bigint NOT NULL,
    actor text NOT NULL,
    comment text NOT NULL,
    operation text NOT NULL,
    -- The whole entry (the documents before and after) as JSON.
    entry json NOT NULL,
    PRIMARY KEY (environment, revision)
);

-- Which flags and segments each audit entry touches, for the history of one of them.
CREATE TABLE audit_subjects (
    environment text COLLATE "C" NOT NULL,
    -- 'flag' or 'segment'.
    kind text NOT NULL CHECK (kind IN ('flag', 'segment')),
    key text COLLATE "C" NOT NULL,
    revision bigint NOT NULL,
    PRIMARY KEY (environment, kind, key, revision),
    FOREIGN KEY (environment, revision) REFERENCES audit (environment, revision) ON DELETE CASCADE
);

CREATE TABLE rollouts (
    environment text COLLATE "C" NOT NULL REFERENCES environments (key) ON DELETE CASCADE,
    flag text COLLATE "C" NOT NULL,
    -- The flag's most recent rollout plan, as JSON.
    plan json NOT NULL,
    PRIMARY KEY (environment, flag)
);

CREATE TABLE flag_usage (
    environment text COLLATE "C" NOT NULL REFERENCES environments (key) ON DELETE CASCADE,
    flag text COLLATE "C" NOT NULL,
    -- Evaluations SDKs reported, as JSON.
    usage json NOT NULL,
    PRIMARY KEY (environment, flag)
);

CREATE TABLE tokens (
    id text COLLATE "C" PRIMARY KEY,
    -- The token's record (its SHA-256, role, environment, revocation) as JSON.
    record json NOT NULL
);

CREATE TABLE secrets (
    name text COLLATE "C" PRIMARY KEY,
    value bytea NOT NULL
);
