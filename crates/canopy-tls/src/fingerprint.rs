//! SHA-256 certificate fingerprints: what the server prints and what clients pin.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest as _, Sha256};

use crate::TlsError;

/// The SHA-256 digest of a certificate's DER encoding.
///
/// Shown as `sha256:` + 64 lowercase hex digits. [`Fingerprint::parse`] accepts that form and
/// the colon-separated one (`AB:CD:...`), case-insensitively, with or without a `sha256:` (or
/// openssl's `SHA256 Fingerprint=`) prefix.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint([u8; 32]);

impl Fingerprint {
    /// The fingerprint of a DER-encoded certificate.
    pub fn of_der(der: &[u8]) -> Fingerprint {
        Fingerprint(Sha256::digest(der).into())
    }

    /// Parses a fingerprint as users write it (see the type's documentation).
    pub fn parse(text: &str) -> Result<Fingerprint, TlsError> {
        let bad = |reason: &str| TlsError::Fingerprint {
            input: text.to_owned(),
            reason: reason.to_owned(),
        };
        let mut s = text.trim();
        for prefix in ["sha256 fingerprint=", "sha256:", "sha256="] {
            if s.get(..prefix.len())
                .is_some_and(|head| head.eq_ignore_ascii_case(prefix))
            {
                s = s[prefix.len()..].trim_start();
                break;
            }
        }
        if s.is_empty() {
            return Err(bad("it is empty"));
        }
        let hex: String = if s.contains(':') {
            let parts: Vec<&str> = s.split(':').collect();
            if parts.iter().any(|p| p.len() != 2) {
                return Err(bad(
                    "in the colon-separated form every byte is two hex digits",
                ));
            }
            parts.concat()
        } else {
            s.to_owned()
        };
        if let Some(c) = hex.chars().find(|c| !c.is_ascii_hexdigit()) {
            return Err(bad(&format!("{c:?} is not a hex digit")));
        }
        if hex.len() != 64 {
            return Err(bad(&format!(
                "a SHA-256 fingerprint has 64 hex digits, this one has {}",
                hex.len()
            )));
        }
        let mut bytes = [0u8; 32];
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)
                .map_err(|_| bad("not hexadecimal"))?;
        }
        Ok(Fingerprint(bytes))
    }

    /// The 32 bytes of the digest.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The colon-separated uppercase form, as `openssl x509 -fingerprint -sha256` prints it.
    pub fn to_colon_hex(&self) -> String {
        self.0
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect::<Vec<_>>()
            .join(":")
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("sha256:")?;
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

impl FromStr for Fingerprint {
    type Err = TlsError;

    fn from_str(s: &str) -> Result<Fingerprint, TlsError> {
        Fingerprint::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_both_forms() {
        let fp = Fingerprint::of_der(b"certificate");
        let shown = fp.to_string();
        assert!(shown.starts_with("sha256:"), "{shown}");
        assert_eq!(shown.len(), 7 + 64);
        assert_eq!(Fingerprint::parse(&shown).unwrap(), fp);
        assert_eq!(Fingerprint::parse(&shown.to_uppercase()).unwrap(), fp);
        assert_eq!(Fingerprint::parse(&shown[7..]).unwrap(), fp);
        assert_eq!(Fingerprint::parse(&fp.to_colon_hex()).unwrap(), fp);
        let openssl = format!("SHA256 Fingerprint={}", fp.to_colon_hex());
        assert_eq!(Fingerprint::parse(&openssl).unwrap(), fp);
        assert_eq!(
            Fingerprint::parse(&format!("sha256:{}", fp.to_colon_hex().to_lowercase())).unwrap(),
            fp
        );
    }

    #[test]
    fn refuses_malformed_input_clearly() {
        for (input, says) in [
            ("", "empty"),
            ("sha256:", "empty"),
            ("sha256:abcd", "64 hex digits, this one has 4"),
            (&"zz".repeat(32), "'z' is not a hex digit"),
            ("AB:CD:E", "two hex digits"),
        ] {
            let e = Fingerprint::parse(input).unwrap_err().to_string();
            assert!(e.contains(says), "{input:?}: {e}");
            assert!(e.contains("invalid certificate fingerprint"), "{e}");
        }
    }
}
