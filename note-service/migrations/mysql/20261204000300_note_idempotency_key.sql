-- Idempotency-Key of POST /v1/note: the client's key and a SHA-256 (hex) of
-- the title and content it came with, kept with the note it created. The
-- key is unique per owner and compared byte for byte (ascii_bin); notes
-- created without one leave both NULL, which the unique key allows.
ALTER TABLE note
    ADD COLUMN idempotency_key VARCHAR(255) CHARACTER SET ascii COLLATE ascii_bin NULL,
    ADD COLUMN request_hash    CHAR(64)     CHARACTER SET ascii COLLATE ascii_bin NULL,
    ADD UNIQUE KEY ux_note_user_idempotency_key (user_id, idempotency_key);
