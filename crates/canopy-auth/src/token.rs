//! Opaque tokens that the Canopy server issues itself (sessions, API tokens,
//! bootstrap tokens), and the `Authorization: Bearer` header they travel in.
//!
//! A token is `cnp_<kind>_<43 chars>`: a recognisable prefix (so leaked tokens
//! can be found by secret scanners and the kind is visible at a glance)
//! followed by 32 bytes from a CSPRNG in unpadded base64url. The server stores
//! only [`hash`] of a token, never the token itself; 256 random bits need no
//! salt or slow hash.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::Rng as _;
use sha2::{Digest as _, Sha256};

/// Random bytes in a token.
const RANDOM_BYTES: usize = 32;
/// Length of the base64url encoding of [`RANDOM_BYTES`].
const RANDOM_CHARS: usize = 43;
/// Length of `cnp_x_`.
const PREFIX_LEN: usize = 6;
/// Total length of every Canopy token.
pub const TOKEN_LEN: usize = PREFIX_LEN + RANDOM_CHARS;

/// What a token is for; visible in its prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TokenKind {
    /// A browser/CLI login session (`cnp_s_`).
    Session,
    /// A long-lived API token (`cnp_a_`).
    Api,
    /// A one-time bootstrap token, e.g. for enrolling an edge (`cnp_b_`).
    Bootstrap,
}

impl TokenKind {
    /// The prefix tokens of this kind start with.
    pub fn prefix(self) -> &'static str {
        match self {
            TokenKind::Session => "cnp_s_",
            TokenKind::Api => "cnp_a_",
            TokenKind::Bootstrap => "cnp_b_",
        }
    }

    /// The kind of a well-formed Canopy token, `None` for anything else.
    pub fn of(token: &str) -> Option<TokenKind> {
        if !looks_like_canopy_token(token) {
            return None;
        }
        [TokenKind::Session, TokenKind::Api, TokenKind::Bootstrap]
            .into_iter()
            .find(|kind| token.starts_with(kind.prefix()))
    }
}

/// A fresh random token of the given kind.
pub fn generate(kind: TokenKind) -> String {
    let mut bytes = [0u8; RANDOM_BYTES];
    // ThreadRng: ChaCha12 seeded (and periodically reseeded) from the OS.
    rand::rng().fill_bytes(&mut bytes);
    let mut token = String::with_capacity(TOKEN_LEN);
    token.push_str(kind.prefix());
    URL_SAFE_NO_PAD.encode_string(bytes, &mut token);
    token
}

/// Lowercase hex SHA-256 of the token: what the store keeps and looks up.
pub fn hash(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    let mut out = String::with_capacity(64);
    for byte in digest {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        out.push(HEX[usize::from(byte >> 4)] as char);
        out.push(HEX[usize::from(byte & 0x0f)] as char);
    }
    out
}

/// Whether `s` has the exact shape of a Canopy token (known prefix, 43
/// base64url characters). Cheap; says nothing about validity.
pub fn looks_like_canopy_token(s: &str) -> bool {
    s.len() == TOKEN_LEN
        && matches!(s.get(..PREFIX_LEN), Some("cnp_s_" | "cnp_a_" | "cnp_b_"))
        && s.as_bytes()[PREFIX_LEN..]
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
}

/// The credential in an `Authorization: Bearer <token>` header value. The
/// scheme is case-insensitive and surrounding whitespace is ignored; `None`
/// for another scheme, an empty token, or a token containing whitespace or
/// control characters.
pub fn bearer(header_value: &str) -> Option<&str> {
    let value = header_value.trim_matches([' ', '\t']);
    let scheme = value.get(..6)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let rest = &value[6..];
    // At least one space between scheme and token.
    if !rest.starts_with([' ', '\t']) {
        return None;
    }
    let token = rest.trim_start_matches([' ', '\t']);
    if token.is_empty() || token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return None;
    }
    Some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_and_kinds() {
        for (kind, prefix) in [
            (TokenKind::Session, "cnp_s_"),
            (TokenKind::Api, "cnp_a_"),
            (TokenKind::Bootstrap, "cnp_b_"),
        ] {
            let token = generate(kind);
            assert!(token.starts_with(prefix), "{token}");
            assert_eq!(token.len(), 49);
            assert_eq!(TOKEN_LEN, 49);
            assert!(looks_like_canopy_token(&token));
            assert_eq!(TokenKind::of(&token), Some(kind));
            let random = URL_SAFE_NO_PAD.decode(&token[6..]).unwrap();
            assert_eq!(random.len(), 32);
        }
    }

    #[test]
    fn tokens_are_unique() {
        let tokens: std::collections::HashSet<_> =
            (0..1000).map(|_| generate(TokenKind::Api)).collect();
        assert_eq!(tokens.len(), 1000);
    }

    #[test]
    fn shape_check() {
        let good = generate(TokenKind::Session);
        assert!(looks_like_canopy_token(&good));
        assert!(!looks_like_canopy_token(""));
        assert!(!looks_like_canopy_token(&good[..48]));
        assert!(!looks_like_canopy_token(&format!("{good}A")));
        assert!(!looks_like_canopy_token(
            &good.replacen("cnp_s_", "cnp_x_", 1)
        ));
        assert!(!looks_like_canopy_token(
            &good.replacen("cnp_s_", "CNP_S_", 1)
        ));
        let with_plus = format!("cnp_a_{}+", &good[6..48]);
        assert!(!looks_like_canopy_token(&with_plus));
        let with_multibyte = format!("cnp_a_{}é", &good[6..47]);
        assert_eq!(with_multibyte.len(), 49);
        assert!(!looks_like_canopy_token(&with_multibyte));
        assert_eq!(TokenKind::of("cnp_s_short"), None);
    }

    #[test]
    fn hash_is_stable_lowercase_hex() {
        assert_eq!(
            hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let token = generate(TokenKind::Api);
        let h = hash(&token);
        assert_eq!(h, hash(&token));
        assert_eq!(h.len(), 64);
        assert!(
            h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        );
        assert_ne!(h, hash(&generate(TokenKind::Api)));
    }

    #[test]
    fn bearer_parsing() {
        assert_eq!(bearer("Bearer abc.def"), Some("abc.def"));
        assert_eq!(bearer("bearer abc"), Some("abc"));
        assert_eq!(bearer("BEARER abc"), Some("abc"));
        assert_eq!(bearer("  Bearer   abc  "), Some("abc"));
        assert_eq!(bearer("Bearer\tabc"), Some("abc"));
        assert_eq!(bearer("Bearer"), None);
        assert_eq!(bearer("Bearer "), None);
        assert_eq!(bearer("Bearer    "), None);
        assert_eq!(bearer("Bearerabc"), None);
        assert_eq!(bearer("Basic dXNlcjpwYXNz"), None);
        assert_eq!(bearer("Bearer abc def"), None);
        assert_eq!(bearer("Bearer abc\u{0}"), None);
        assert_eq!(bearer("Bearer a\u{7f}b"), None);
        assert_eq!(bearer("Bearer a\u{a0}b"), None);
        assert_eq!(bearer("Bearer abc\r\n"), None);
        assert_eq!(bearer(""), None);
        assert_eq!(bearer("Beaŕer abc"), None);
        assert_eq!(bearer("éééééé abc"), None);
    }
}
