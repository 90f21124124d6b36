-- Accounts. Times are Unix milliseconds; deleted_at marks a soft delete.
-- The unique index (not a look-up before insert) is what keeps usernames unique.
CREATE TABLE user (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    username      TEXT    NOT NULL,
    password_hash TEXT    NOT NULL,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    deleted_at    INTEGER NULL
);

CREATE UNIQUE INDEX ux_user_username ON user (username);
