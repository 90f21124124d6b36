-- Token revocation (POST /v1/user/logout).
-- token_epoch: moved on by "log out everywhere"; a token carries the epoch it
-- was issued in and is refused once the user's has moved past it.
ALTER TABLE `user` ADD COLUMN token_epoch BIGINT NOT NULL DEFAULT 0;

-- Single tokens logged out, by their jti, kept until they would have expired
-- anyway (expires_at, Unix milliseconds); older rows are deleted as new ones come.
CREATE TABLE revoked_token (
    jti        VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL PRIMARY KEY,
    user_id    BIGINT      NOT NULL,
    expires_at BIGINT      NOT NULL,
    KEY ix_revoked_token_expires_at (expires_at)
) ENGINE = InnoDB;
