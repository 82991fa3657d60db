-- Flagstaff's schema, version 4: web console sessions (DESIGN.md section 11), kept here so
-- that any replica serves them.

CREATE TABLE console_sessions (
    -- The SHA-256 of the session's id, in hex: the id itself is only in the person's cookie.
    id_hash text COLLATE "C" PRIMARY KEY,
    -- The session (who, role, environments, CSRF token, times) as JSON.
    record json NOT NULL,
    -- When it was last used, in Unix milliseconds: sessions unused for 12 hours go.
    seen_ms bigint NOT NULL
);
CREATE INDEX console_sessions_by_use ON console_sessions (seen_ms);
