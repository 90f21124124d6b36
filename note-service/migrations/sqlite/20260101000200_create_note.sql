-- Notes. Times are Unix milliseconds; deleted_at marks a soft delete.
-- Pages are read per owner, newest first: hence the (user_id, created_at) index.
CREATE TABLE note (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id    INTEGER NOT NULL,
    title      TEXT    NOT NULL,
    content    TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    deleted_at INTEGER NULL
);

CREATE INDEX ix_note_user_created ON note (user_id, created_at);
