-- The embedded mirror: the same record as in Postgres. old_id_numbers holds
-- the numbers separated by ';'; updated_at is seconds since the epoch.
CREATE TABLE citizen (
    id_number           TEXT NOT NULL CHECK (length(id_number) = 12),
    full_name           TEXT NOT NULL,
    birth_year          INTEGER NOT NULL,
    birth_month         INTEGER,
    birth_day           INTEGER,
    gender              TEXT NOT NULL CHECK (gender IN ('male', 'female')),
    old_id_numbers      TEXT NOT NULL DEFAULT '',
    place_of_origin     TEXT NOT NULL DEFAULT '',
    permanent_residence TEXT NOT NULL DEFAULT '',
    status              TEXT NOT NULL CHECK (status IN ('active', 'deceased', 'cancelled')),
    household_id        TEXT NOT NULL DEFAULT '',
    relation_to_head    TEXT NOT NULL DEFAULT '',
    updated_at          INTEGER NOT NULL,
    record_version      INTEGER NOT NULL DEFAULT 1,
    src_file            INTEGER,
    src_line            INTEGER
);
CREATE UNIQUE INDEX citizen_pk ON citizen (id_number);

CREATE TABLE mirror_state (
    singleton  INTEGER PRIMARY KEY CHECK (singleton = 1),
    data_as_of INTEGER,
    generation INTEGER NOT NULL DEFAULT 0
);
INSERT INTO mirror_state (singleton) VALUES (1);

CREATE TABLE import_log (
    digest      TEXT PRIMARY KEY,
    mode        TEXT NOT NULL,
    rows        INTEGER NOT NULL,
    changed     INTEGER NOT NULL,
    finished_at INTEGER NOT NULL
);
