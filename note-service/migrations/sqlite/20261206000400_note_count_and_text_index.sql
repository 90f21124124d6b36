-- Notes at scale. Undo with down/sqlite/20261206000400_note_count_and_text_index.sql.
--
-- note_count: each owner's number of live notes, kept by the repository in
-- the same transaction as every create and delete, so that a query's
-- `total` is one row read instead of a count over all the owner's notes.
-- Owners without a row have none.
CREATE TABLE note_count (
    user_id INTEGER PRIMARY KEY,
    live    INTEGER NOT NULL
);

INSERT INTO note_count (user_id, live)
    SELECT user_id, COUNT(*) FROM note WHERE deleted_at IS NULL GROUP BY user_id;

-- note_text: a trigram index of every note's title and content (deleted
-- ones too: the query filters them, and the index stays a plain mirror of
-- the table). External content: the text itself stays in `note`; the
-- triggers keep the index in step with every insert, update and delete.
-- Trigram folds case (Unicode), so a MATCH finds a superset of what the
-- ASCII-folding substring check then confirms.
CREATE VIRTUAL TABLE note_text USING fts5(
    title,
    content,
    content = 'note',
    content_rowid = 'id',
    tokenize = 'trigram'
);

CREATE TRIGGER note_text_after_insert AFTER INSERT ON note BEGIN
    INSERT INTO note_text (rowid, title, content) VALUES (new.id, new.title, new.content);
END;

CREATE TRIGGER note_text_after_delete AFTER DELETE ON note BEGIN
    INSERT INTO note_text (note_text, rowid, title, content) VALUES ('delete', old.id, old.title, old.content);
END;

CREATE TRIGGER note_text_after_update AFTER UPDATE OF title, content ON note BEGIN
    INSERT INTO note_text (note_text, rowid, title, content) VALUES ('delete', old.id, old.title, old.content);
    INSERT INTO note_text (rowid, title, content) VALUES (new.id, new.title, new.content);
END;

-- Index the notes already there.
INSERT INTO note_text (note_text) VALUES ('rebuild');
