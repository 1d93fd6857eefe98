-- pilog index: a catalogue of the log's segments, consumer cursors, and incidents.
-- Everything here but `cursors` can be rebuilt from the log (docs/index-schema.md).
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS segments (
    base_seq    INTEGER PRIMARY KEY,
    last_seq    INTEGER NOT NULL,      -- base_seq - 1 when empty
    first_ts_ns INTEGER,               -- wall time of the first and last event
    last_ts_ns  INTEGER,
    bytes       INTEGER NOT NULL,
    sealed      INTEGER NOT NULL
);
-- WITHOUT ROWID: a cursor move rewrites one b-tree page, not a table and its key index.
CREATE TABLE IF NOT EXISTS cursors (
    name       TEXT PRIMARY KEY,       -- "sink:NAME" or "projection:NAME"
    next_seq   INTEGER NOT NULL,       -- the next seq the consumer will handle (exclusive)
    updated_ns INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rewinds (
    name         TEXT PRIMARY KEY,     -- the consumer, as in `cursors`
    from_seq     INTEGER NOT NULL,     -- re-deliver from here
    to_seq       INTEGER,              -- to here (inclusive); NULL: everything after
    resume_seq   INTEGER,              -- then jump here (the cursor before the replay)
    applied      INTEGER NOT NULL,     -- 1 once the consumer has rewound
    requested_ns INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS incidents (
    seq    INTEGER PRIMARY KEY,        -- the Gap, Repair or DeadLetter event that records it
    kind   TEXT NOT NULL,              -- "gap" | "repair" | "dead_letter"
    ts_ns  INTEGER NOT NULL,
    detail TEXT NOT NULL
);
