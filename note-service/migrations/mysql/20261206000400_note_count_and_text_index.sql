-- Notes at scale. Undo with down/mysql/20261206000400_note_count_and_text_index.sql.
--
-- note_count: each owner's number of live notes, kept by the repository in
-- the same transaction as every create and delete, so that a query's
-- `total` is one row read instead of a count over all the owner's notes.
-- Owners without a row have none.
CREATE TABLE note_count (
    user_id BIGINT NOT NULL PRIMARY KEY,
    live    BIGINT NOT NULL
) ENGINE = InnoDB;

INSERT INTO note_count (user_id, live)
    SELECT user_id, COUNT(*) FROM note WHERE deleted_at IS NULL GROUP BY user_id;

-- ft_note_text: a FULLTEXT index of title and content with the ngram
-- parser, which MySQL has and MariaDB does not; on a server without it
-- nothing is built and searches scan (note-service looks for the index at
-- start). Built without stopwords: the ngram parser drops every ngram that
-- contains one, and the default list holds "a" and "i".
SET @note_text_ddl = IF(
    (SELECT COUNT(*) FROM information_schema.PLUGINS
      WHERE PLUGIN_NAME = 'ngram' AND PLUGIN_STATUS = 'ACTIVE') > 0,
    'ALTER TABLE note ADD FULLTEXT INDEX ft_note_text (title, content) WITH PARSER ngram',
    'DO 0');
SET SESSION innodb_ft_enable_stopword = OFF;
PREPARE note_text_ddl FROM @note_text_ddl;
EXECUTE note_text_ddl;
DEALLOCATE PREPARE note_text_ddl;
SET SESSION innodb_ft_enable_stopword = DEFAULT;
