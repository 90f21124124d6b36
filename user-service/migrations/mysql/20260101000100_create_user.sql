-- Accounts. Times are Unix milliseconds; deleted_at marks a soft delete.
-- The unique index (not a look-up before insert) is what keeps usernames unique;
-- utf8mb4_bin makes it exact, as on SQLite.
CREATE TABLE `user` (
    id            BIGINT       NOT NULL AUTO_INCREMENT PRIMARY KEY,
    username      VARCHAR(128) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    password_hash VARCHAR(255) NOT NULL,
    created_at    BIGINT       NOT NULL,
    updated_at    BIGINT       NOT NULL,
    deleted_at    BIGINT       NULL,
    UNIQUE KEY ux_user_username (username)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;
