//! The input rules of the public contract, in one place for the gateway and
//! the services alike. Lengths count characters (Unicode scalar values),
//! except note content, which is bounded in bytes.

/// Longest username, in characters.
pub const USERNAME_MAX_CHARS: usize = 128;
/// Shortest password, in characters.
pub const PASSWORD_MIN_CHARS: usize = 6;
/// Longest password, in characters.
pub const PASSWORD_MAX_CHARS: usize = 128;
/// Longest note title, in characters.
pub const TITLE_MAX_CHARS: usize = 128;
/// Largest note content, in bytes (64 KiB).
pub const CONTENT_MAX_BYTES: usize = 64 * 1024;
/// Largest page.
pub const LIMIT_MAX: i64 = 100;
/// Page size when none is asked for.
pub const LIMIT_DEFAULT: i64 = 10;
/// Longest search key, in characters.
pub const SEARCH_KEY_MAX_CHARS: usize = 128;
/// Most ids in one multi-get.
pub const MGET_MAX_IDS: usize = 100;
/// Longest `Idempotency-Key`, in characters (all ASCII).
pub const IDEMPOTENCY_KEY_MAX_CHARS: usize = 255;

/// A rule the input broke; the message is meant for the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

fn invalid(message: impl Into<String>) -> Invalid {
    Invalid(message.into())
}

fn char_count_within(field: &str, value: &str, min: usize, max: usize) -> Result<(), Invalid> {
    let count = value.chars().count();
    if count < min || count > max {
        return Err(if min == 1 && count == 0 {
            invalid(format!("{field} must not be empty"))
        } else {
            invalid(format!(
                "{field} must be {min} to {max} characters, got {count}"
            ))
        });
    }
    Ok(())
}

fn no_control_chars(field: &str, value: &str) -> Result<(), Invalid> {
    if value.chars().any(char::is_control) {
        return Err(invalid(format!(
            "{field} must not contain control characters"
        )));
    }
    Ok(())
}

/// Invisible characters that make two names look alike, or reorder how one
/// is shown: zero-width characters, joiners, bidirectional controls, the
/// byte order mark and other format characters (Unicode category Cf).
fn is_invisible_format(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{061C}' | '\u{180E}'
        | '\u{200B}'..='\u{200F}'
        | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{2064}'
        | '\u{2066}'..='\u{206F}'
        | '\u{FEFF}'
        | '\u{FFF9}'..='\u{FFFB}')
}

/// The form a username is stored and compared in: Unicode NFKC, so that
/// compatibility variants (full-width letters, ligatures, composed and
/// decomposed accents) name one account, not several look-alikes.
pub fn normalize_username(value: &str) -> String {
    use unicode_normalization::UnicodeNormalization as _;
    value.nfkc().collect()
}

/// 1–128 characters, no control, zero-width or bidirectional control
/// characters, no surrounding whitespace. Check the normalised form
/// ([`normalize_username`]).
pub fn username(value: &str) -> Result<(), Invalid> {
    char_count_within("username", value, 1, USERNAME_MAX_CHARS)?;
    no_control_chars("username", value)?;
    if value.chars().any(is_invisible_format) {
        return Err(invalid(
            "username must not contain zero-width or bidirectional control characters",
        ));
    }
    if value.trim() != value {
        return Err(invalid("username must not start or end with whitespace"));
    }
    Ok(())
}

/// 6–128 characters.
pub fn password(value: &str) -> Result<(), Invalid> {
    char_count_within("password", value, PASSWORD_MIN_CHARS, PASSWORD_MAX_CHARS)
}

/// 1–128 characters, not blank, no control characters.
pub fn title(value: &str) -> Result<(), Invalid> {
    char_count_within("title", value, 1, TITLE_MAX_CHARS)?;
    if value.trim().is_empty() {
        return Err(invalid("title must not be blank"));
    }
    no_control_chars("title", value)
}

/// At most 64 KiB.
pub fn content(value: &str) -> Result<(), Invalid> {
    if value.len() > CONTENT_MAX_BYTES {
        return Err(invalid(format!(
            "content must be at most {CONTENT_MAX_BYTES} bytes, got {}",
            value.len()
        )));
    }
    Ok(())
}

/// A positive id.
pub fn id(field: &str, value: i64) -> Result<(), Invalid> {
    if value <= 0 {
        return Err(invalid(format!("{field} must be a positive integer")));
    }
    Ok(())
}

/// Parses a path or query id: digits only, positive, within 64 bits.
pub fn parse_id(field: &str, raw: &str) -> Result<i64, Invalid> {
    match raw.parse::<i64>() {
        Ok(value) if value > 0 => Ok(value),
        _ => Err(invalid(format!(
            "{field} must be a positive integer, got {raw:?}"
        ))),
    }
}

/// `offset >= 0` and `1 <= limit <= 100`.
pub fn page(offset: i64, limit: i64) -> Result<(), Invalid> {
    if offset < 0 {
        return Err(invalid("offset must not be negative"));
    }
    if !(1..=LIMIT_MAX).contains(&limit) {
        return Err(invalid(format!(
            "limit must be 1 to {LIMIT_MAX}, got {limit}"
        )));
    }
    Ok(())
}

/// At most 128 characters.
pub fn search_key(value: &str) -> Result<(), Invalid> {
    char_count_within("search_key", value, 0, SEARCH_KEY_MAX_CHARS)
}

/// An `Idempotency-Key`: 1 to 255 visible ASCII characters (no spaces),
/// enough for a UUID or any client's own scheme.
pub fn idempotency_key(value: &str) -> Result<(), Invalid> {
    if value.is_empty() || value.len() > IDEMPOTENCY_KEY_MAX_CHARS {
        return Err(invalid(format!(
            "Idempotency-Key must be 1 to {IDEMPOTENCY_KEY_MAX_CHARS} characters, got {}",
            value.chars().count()
        )));
    }
    if !value.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(invalid(
            "Idempotency-Key must be visible ASCII characters without spaces",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {

    #[test]
    fn usernames_are_nfkc_normalised_and_invisible_characters_refused() {
        // Full-width letters, a ligature, a decomposed accent: one name each.
        assert_eq!(normalize_username("ｆｏｏ"), "foo");
        assert_eq!(normalize_username("ﬁle"), "file");
        assert_eq!(normalize_username("e\u{301}lise"), "élise");
        assert_eq!(normalize_username("élise"), "élise");
        for sneaky in [
            "ad\u{200B}min", // zero-width space
            "ad\u{200D}min", // zero-width joiner
            "\u{202E}nimda", // right-to-left override
            "admin\u{2066}", // left-to-right isolate
            "\u{FEFF}admin", // byte order mark
        ] {
            let err = username(&normalize_username(sneaky)).expect_err(sneaky);
            assert!(err.0.contains("zero-width"), "{sneaky:?}: {err}");
        }
        assert!(username(&normalize_username("Zoë 李")).is_ok());
    }

    use super::*;

    #[test]
    fn rules_accept_the_boundaries_and_refuse_past_them() {
        let cases: &[(&str, Result<(), Invalid>, bool)] = &[
            ("username empty", username(""), false),
            ("username 1 char", username("a"), true),
            ("username 128 chars", username(&"é".repeat(128)), true),
            ("username 129 chars", username(&"é".repeat(129)), false),
            ("username with newline", username("a\nb"), false),
            ("username padded", username(" bob"), false),
            ("password 5 chars", password("12345"), false),
            ("password 6 chars", password("123456"), true),
            ("password 129 chars", password(&"x".repeat(129)), false),
            ("idempotency key empty", idempotency_key(""), false),
            (
                "idempotency key 255",
                idempotency_key(&"k".repeat(255)),
                true,
            ),
            (
                "idempotency key 256",
                idempotency_key(&"k".repeat(256)),
                false,
            ),
            (
                "idempotency key UUID",
                idempotency_key("0b6c3c1e-5f0e-4a47-9d51-0f3c7a1b2d4e"),
                true,
            ),
            ("idempotency key space", idempotency_key("a b"), false),
            ("idempotency key non-ASCII", idempotency_key("clé"), false),
            ("title empty", title(""), false),
            ("title blank", title("   "), false),
            ("title 128 CJK", title(&"笔".repeat(128)), true),
            ("title 129", title(&"t".repeat(129)), false),
            (
                "content 64 KiB",
                content(&"c".repeat(CONTENT_MAX_BYTES)),
                true,
            ),
            (
                "content 64 KiB + 1",
                content(&"c".repeat(CONTENT_MAX_BYTES + 1)),
                false,
            ),
            ("content empty", content(""), true),
            ("page ok", page(0, 100), true),
            ("page negative offset", page(-1, 10), false),
            ("page limit 0", page(0, 0), false),
            ("page limit 101", page(0, 101), false),
        ];
        for (name, result, ok) in cases {
            assert_eq!(result.is_ok(), *ok, "{name}: {result:?}");
        }
    }

    #[test]
    fn ids_must_be_positive_64_bit_integers() {
        assert_eq!(parse_id("note_id", "42"), Ok(42));
        for raw in ["0", "-1", "abc", "1.5", "", "99999999999999999999", "+"] {
            let err = parse_id("note_id", raw).expect_err(raw);
            assert!(
                err.0.starts_with("note_id must be a positive integer"),
                "{raw}: {err}"
            );
        }
    }

    #[test]
    fn messages_name_the_field() {
        assert_eq!(title("").unwrap_err().0, "title must not be empty");
        assert_eq!(
            password("abc").unwrap_err().0,
            "password must be 6 to 128 characters, got 3"
        );
    }
}
