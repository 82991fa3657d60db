-- Flagstaff's schema, version 2: what several flagstaffd replicas on one database share
-- beyond the documents (docs/storage.md, "Exactly-one duties").

-- Leases. The row 'duties' names the replica that runs the exactly-one duties (the rollout
-- scheduler, guard decisions). Its holder renews it every 2 s; once `expires_at` has passed,
-- another replica takes it with the next generation. Times are the database's clock, so the
-- replicas' clocks need not agree.
CREATE TABLE leases (
    name text COLLATE "C" PRIMARY KEY,
    -- Which flagstaffd holds it: a random id per process.
    holder text NOT NULL,
    -- Raised whenever the lease changes hands (or lapses and is taken again).
    generation bigint NOT NULL CHECK (generation > 0),
    expires_at timestamptz NOT NULL
);

-- Raises FS001 unless `who` holds lease `lease_name` in generation `gen` right now. A duty's
-- transaction calls it before COMMIT, so the write of a leader that froze or was deposed
-- fails. FOR SHARE keeps the lease from changing hands until the duty's transaction ends.
CREATE FUNCTION flagstaff_hold_lease(lease_name text, who text, gen bigint) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM leases
        WHERE name = lease_name AND holder = who AND generation = gen
          AND expires_at > clock_timestamp()
        FOR SHARE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'the lease % of generation % is no longer held by this flagstaffd',
            lease_name, gen USING ERRCODE = 'FS001';
    END IF;
END
$$;

-- How many plan writes an environment has had: a flagstaffd that locks the row and finds
-- another count than it last saw reads the environment's plans again before it builds on
-- them (a pause or a resume through another flagstaffd makes no revision).
ALTER TABLE environments ADD COLUMN plan_writes bigint NOT NULL DEFAULT 0;

-- Writes a rollout plan if the stored one is at version `expected` (0: none stored); raises
-- FS002 otherwise, so that a plan changed through another flagstaffd meanwhile is never
-- overwritten. The environment's row is locked first, as every commit locks it, so plan
-- writes of one environment happen one at a time; its count of plan writes goes up.
CREATE FUNCTION flagstaff_put_plan(env text, flag_key text, plan_text text, expected bigint)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    stored bigint;
BEGIN
    PERFORM 1 FROM environments WHERE key = env FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no environment %', env USING ERRCODE = 'FS003';
    END IF;
    SELECT COALESCE((plan ->> 'version')::bigint, 0) INTO stored
        FROM rollouts WHERE environment = env AND flag = flag_key;
    IF NOT FOUND THEN
        stored := 0;
    END IF;
    IF stored <> expected THEN
        RAISE EXCEPTION 'the rollout plan of flag % in environment % is at version %, not %',
            flag_key, env, stored, expected USING ERRCODE = 'FS002', DETAIL = flag_key;
    END IF;
    INSERT INTO rollouts (environment, flag, plan) VALUES (env, flag_key, plan_text::json)
        ON CONFLICT (environment, flag) DO UPDATE SET plan = EXCLUDED.plan;
    UPDATE environments SET plan_writes = plan_writes + 1 WHERE key = env;
END
$$;

-- What SDKs on every replica reported for the current stage of each guarded plan: counts
-- are added (never overwritten), so reports through any replica sum. A report for a newer
-- flag version (the plan entered a new stage) starts the counts again; one for an older
-- version is ignored.
CREATE TABLE guard_counts (
    environment text COLLATE "C" NOT NULL REFERENCES environments (key) ON DELETE CASCADE,
    flag text COLLATE "C" NOT NULL,
    flag_version bigint NOT NULL,
    target_weight bigint NOT NULL,
    baseline_weight bigint NOT NULL,
    target_exposures bigint NOT NULL,
    baseline_exposures bigint NOT NULL,
    target_events bigint NOT NULL,
    baseline_events bigint NOT NULL,
    PRIMARY KEY (environment, flag)
);

-- A token a flagstaffd has not heard of yet (created through another) is looked up by the
-- SHA-256 of its secret, which its record holds.
CREATE INDEX tokens_by_hash ON tokens ((record ->> 'hash'));
