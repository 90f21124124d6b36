//! Page cursors of `GET /v1/note/query` (`cursor` in, `next_cursor` out):
//! the position after the last note of a page in the newest-first order,
//! `(created_at, id)`. note-service writes them, the gateway checks them
//! before any call, both with this one codec.
//!
//! Clients treat a cursor as opaque. It is 32 hex digits (the two numbers,
//! 64 bits each, big-endian): safe in a URL as it is, and strict to parse,
//! so that anything else is refused with one clear message.

use std::fmt;

use crate::validate::Invalid;

/// Hex digits of an encoded cursor.
const ENCODED_LEN: usize = 32;

/// Where the next page starts: after the note with this creation time and
/// id, in the order `created_at DESC, id DESC`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct PageCursor {
    /// Creation time of the last note of the page (Unix milliseconds).
    pub created_at: i64,
    /// Id of the last note of the page.
    pub id: i64,
}

impl PageCursor {
    /// Reads a cursor this codec wrote; anything else is refused.
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let refused = || {
            Invalid("cursor is not one this API gave out: pass next_cursor of the previous page unchanged".into())
        };
        if raw.len() != ENCODED_LEN || !raw.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(refused());
        }
        let (created_at, id) = raw.split_at(ENCODED_LEN / 2);
        let created_at = u64::from_str_radix(created_at, 16).map_err(|_| refused())?;
        let id = u64::from_str_radix(id, 16).map_err(|_| refused())?;
        match (i64::try_from(created_at), i64::try_from(id)) {
            (Ok(created_at), Ok(id)) if id > 0 => Ok(Self { created_at, id }),
            _ => Err(refused()),
        }
    }
}

impl fmt::Display for PageCursor {
    /// The encoded cursor, as clients see it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Both numbers are non-negative where the store writes them; the
        // casts keep any other value encodable (and `parse` refuses it).
        write!(f, "{:016x}{:016x}", self.created_at as u64, self.id as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_reads_back_as_written() {
        for cursor in [
            PageCursor {
                created_at: 0,
                id: 1,
            },
            PageCursor {
                created_at: 1_765_000_000_123,
                id: 42,
            },
            PageCursor {
                created_at: i64::MAX,
                id: i64::MAX,
            },
        ] {
            let encoded = cursor.to_string();
            assert_eq!(encoded.len(), 32, "{encoded}");
            assert_eq!(PageCursor::parse(&encoded), Ok(cursor), "{encoded}");
        }
    }

    #[test]
    fn anything_but_a_written_cursor_is_refused_with_one_message() {
        let cases = [
            ("empty", ""),
            ("too short", "0123"),
            ("too long", "0000000000000001000000000000000100"),
            ("not hex", "000000000000000z0000000000000001"),
            ("a sign", "+00000000000000100000000000000001"),
            ("id zero", "00000000000000010000000000000000"),
            ("negative time", "ffffffffffffffff0000000000000001"),
            ("negative id", "0000000000000001ffffffffffffffff"),
            ("multi-byte", "ééééééééééééééé0000000000000001"),
        ];
        for (what, raw) in cases {
            let err = PageCursor::parse(raw).expect_err(what);
            assert!(err.0.starts_with("cursor is not one"), "{what}: {err}");
        }
    }
}
