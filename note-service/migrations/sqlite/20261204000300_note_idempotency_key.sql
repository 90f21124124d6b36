-- Idempotency-Key of POST /v1/note: the client's key and a SHA-256 (hex) of
-- the title and content it came with, kept with the note it created. The
-- key is unique per owner; notes created without one leave both NULL.
ALTER TABLE note ADD COLUMN idempotency_key TEXT NULL;
ALTER TABLE note ADD COLUMN request_hash TEXT NULL;

CREATE UNIQUE INDEX ux_note_user_idempotency_key ON note (user_id, idempotency_key);
