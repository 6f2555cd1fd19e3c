-- ID numbers are 12 ASCII digits: every collation sorts them alike, and
-- "C" compares them fastest (primary-key builds, lookups), whatever the
-- database's default collation.
ALTER TABLE citizen ALTER COLUMN id_number TYPE text COLLATE "C";
