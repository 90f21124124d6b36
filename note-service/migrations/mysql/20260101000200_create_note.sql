-- Notes. Times are Unix milliseconds; deleted_at marks a soft delete.
-- Pages are read per owner, newest first: hence the (user_id, created_at) index.
CREATE TABLE note (
    id         BIGINT       NOT NULL AUTO_INCREMENT PRIMARY KEY,
    user_id    BIGINT       NOT NULL,
    title      VARCHAR(128) NOT NULL,
    content    MEDIUMTEXT   NOT NULL,
    created_at BIGINT       NOT NULL,
    updated_at BIGINT       NOT NULL,
    deleted_at BIGINT       NULL,
    KEY ix_note_user_created (user_id, created_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;
