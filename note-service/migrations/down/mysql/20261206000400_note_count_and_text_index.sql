-- Undoes migration 20261206000400 on MySQL/MariaDB (stop note-service
-- first, then run it with the mysql client). The notes themselves are
-- untouched; a service started with this migration again rebuilds both.
DROP TABLE note_count;
SET @note_text_ddl = IF(
    (SELECT COUNT(*) FROM information_schema.STATISTICS
      WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'note' AND INDEX_NAME = 'ft_note_text') > 0,
    'ALTER TABLE note DROP INDEX ft_note_text',
    'DO 0');
PREPARE note_text_ddl FROM @note_text_ddl;
EXECUTE note_text_ddl;
DEALLOCATE PREPARE note_text_ddl;
DELETE FROM _sqlx_migrations WHERE version = 20261206000400;
