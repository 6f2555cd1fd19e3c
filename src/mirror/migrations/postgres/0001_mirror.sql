-- The citizen mirror: one row per personal identification number.
-- id_number is text (not char(12)) so that it compares with text parameters
-- through its primary-key index.
CREATE TABLE citizen (
    id_number           text PRIMARY KEY CHECK (id_number ~ '^[0-9]{12}$'),
    full_name           text NOT NULL,
    -- The date of birth and its precision: a NULL month or day is unknown.
    birth_year          smallint NOT NULL CHECK (birth_year BETWEEN 1 AND 9999),
    birth_month         smallint CHECK (birth_month BETWEEN 1 AND 12),
    birth_day           smallint CHECK (birth_day BETWEEN 1 AND 31),
    gender              text NOT NULL CHECK (gender IN ('male', 'female')),
    old_id_numbers      text[] NOT NULL DEFAULT '{}',
    place_of_origin     text NOT NULL DEFAULT '',
    permanent_residence text NOT NULL DEFAULT '',
    status              text NOT NULL CHECK (status IN ('active', 'deceased', 'cancelled')),
    household_id        text NOT NULL DEFAULT '',
    relation_to_head    text NOT NULL DEFAULT '',
    updated_at          timestamptz NOT NULL,
    -- Bumped by every change of the record: caches and attestations key on it.
    record_version      bigint NOT NULL DEFAULT 1,
    CHECK (birth_day IS NULL OR birth_month IS NOT NULL)
);

-- One row: when the mirror was last brought up to date.
CREATE TABLE mirror_state (
    singleton  boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    data_as_of timestamptz
);
INSERT INTO mirror_state DEFAULT VALUES;
