-- Undoes migration 20261206000400 on SQLite (stop note-service first, then
-- run e.g. `sqlite3 data/note.db < this-file`). The notes themselves are
-- untouched; a service started with this migration again rebuilds both.
DROP TRIGGER note_text_after_insert;
DROP TRIGGER note_text_after_delete;
DROP TRIGGER note_text_after_update;
DROP TABLE note_text;
DROP TABLE note_count;
DELETE FROM _sqlx_migrations WHERE version = 20261206000400;
