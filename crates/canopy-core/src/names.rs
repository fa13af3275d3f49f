//! Identifier rules of the reference catalog and newtypes that can only hold valid values.
//!
//! The patterns are the reference's (`NAME`, `APPNAME`, `VERSION`); they are checked by hand here
//! rather than by regex because they sit on every request path and are easy to state exactly.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Which identifier rule a value must follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameRule {
    /// `^[a-z0-9][a-z0-9-]{0,38}[a-z0-9]{0,1}$` (1-40 chars).
    Name,
    /// `^[a-z0-9][a-z0-9-]{0,24}[a-z0-9]{0,1}$` (1-26 chars), application names.
    AppName,
    /// `^[a-z0-9][a-z0-9-.]{0,18}[a-z0-9]{0,1}$` (1-20 chars).
    Version,
}

impl NameRule {
    fn max_len(self) -> usize {
        match self {
            NameRule::Name => 40,
            NameRule::AppName => 26,
            NameRule::Version => 20,
        }
    }

    /// Checks `s` against the rule; the error says what is wrong in words a user can act on.
    pub fn check(self, s: &str) -> Result<(), String> {
        let max = self.max_len();
        if s.is_empty() {
            return Err("must not be empty".into());
        }
        if s.len() > max {
            return Err(format!(
                "must be at most {max} characters (got {})",
                s.len()
            ));
        }
        let bytes = s.as_bytes();
        let lower_alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
        let middle_ok =
            |b: u8| lower_alnum(b) || b == b'-' || (self == NameRule::Version && b == b'.');
        if !lower_alnum(bytes[0]) {
            return Err("must start with a lowercase letter or digit".into());
        }
        if let Some(bad) = s.chars().find(|c| !c.is_ascii() || !middle_ok(*c as u8)) {
            let allowed = if self == NameRule::Version {
                "lowercase letters, digits, '-' and '.'"
            } else {
                "lowercase letters, digits and '-'"
            };
            return Err(format!("contains {bad:?}; only {allowed} are allowed"));
        }
        Ok(())
    }
}

macro_rules! checked_name {
    ($(#[$doc:meta])* $ty:ident, $rule:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $ty(String);

        impl $ty {
            /// The validated string.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $ty {
            type Error = String;
            fn try_from(s: String) -> Result<Self, String> {
                $rule.check(&s).map_err(|e| format!("{s:?} {e}"))?;
                Ok($ty(s))
            }
        }

        impl TryFrom<&str> for $ty {
            type Error = String;
            fn try_from(s: &str) -> Result<Self, String> {
                $ty::try_from(s.to_string())
            }
        }

        impl From<$ty> for String {
            fn from(n: $ty) -> String {
                n.0
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $ty {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

checked_name!(
    /// A name following the reference `NAME` rule (registries, packages, profiles, artifacts).
    Name,
    NameRule::Name
);
checked_name!(
    /// A version following the reference `VERSION` rule.
    Version,
    NameRule::Version
);
checked_name!(
    /// A project name: same rule as [`Name`].
    ProjectName,
    NameRule::Name
);

/// Checks a display name: at most `max` printable characters, no leading or trailing spaces.
pub fn check_display_name(s: &str, max: usize) -> Result<(), String> {
    if s.chars().count() > max {
        return Err(format!("must be at most {max} characters"));
    }
    if s.chars().any(|c| c.is_control() || is_format_or_private(c)) {
        return Err(
            "must not contain control, invisible formatting or private-use characters".into(),
        );
    }
    if s.trim() != s {
        return Err("must not have leading or trailing spaces".into());
    }
    Ok(())
}

/// Unicode general categories Cf (format) and Co (private use): the reference pattern `^\PC*$`
/// refuses them along with controls.
fn is_format_or_private(c: char) -> bool {
    matches!(c as u32,
        0x00AD | 0x0600..=0x0605 | 0x061C | 0x06DD | 0x070F | 0x0890..=0x0891 | 0x08E2 | 0x180E
        | 0x200B..=0x200F | 0x202A..=0x202E | 0x2060..=0x2064 | 0x2066..=0x206F | 0xFEFF
        | 0xFFF9..=0xFFFB | 0x110BD | 0x110CD | 0x13430..=0x1343F | 0x1BCA0..=0x1BCA3
        | 0x1D173..=0x1D17A | 0xE0001 | 0xE0020..=0xE007F
        | 0xE000..=0xF8FF | 0xF0000..=0xFFFFD | 0x100000..=0x10FFFD)
}

/// Checks a Kubernetes-style namespace name (RFC 1123 label, not `default`).
pub fn check_namespace(s: &str) -> Result<(), String> {
    if s == "default" {
        return Err("the namespace \"default\" cannot be used".into());
    }
    if s.is_empty() || s.len() > 63 {
        return Err("must be 1-63 characters".into());
    }
    let b = s.as_bytes();
    let ok = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    if !ok(b[0]) || !ok(b[b.len() - 1]) || !b.iter().all(|&c| ok(c) || c == b'-') {
        return Err(
            "must be lowercase letters, digits and '-', starting and ending with a letter or digit"
                .into(),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn examples() {
        assert!(NameRule::Name.check("web-server").is_ok());
        assert!(NameRule::Name.check("a").is_ok());
        assert!(NameRule::Name.check("-a").is_err());
        assert!(NameRule::Name.check("Web").is_err());
        assert!(NameRule::Name.check(&"a".repeat(41)).is_err());
        assert!(NameRule::Name.check(&"a".repeat(40)).is_ok());
        assert!(NameRule::AppName.check(&"a".repeat(27)).is_err());
        assert!(NameRule::Version.check("0.1.0").is_ok());
        assert!(NameRule::Version.check("1.2.3-rc.1").is_ok());
        assert!(NameRule::Name.check("a.b").is_err());
        assert!(NameRule::Name.check("../etc").is_err());
        assert!(NameRule::Name.check("é").is_err());
        assert!(check_display_name("Web UI", 40).is_ok());
        assert!(check_display_name("Café ünïcode", 40).is_ok());
        assert!(check_display_name("zero\u{200B}width", 40).is_err());
        assert!(check_display_name("bidi\u{202E}trick", 40).is_err());
        assert!(check_display_name(" padded", 40).is_err());
    }

    fn reference_regex(rule: NameRule) -> regex::Regex {
        regex::Regex::new(match rule {
            NameRule::Name => r"^[a-z0-9][a-z0-9-]{0,38}[a-z0-9]{0,1}$",
            NameRule::AppName => r"^[a-z0-9][a-z0-9-]{0,24}[a-z0-9]{0,1}$",
            NameRule::Version => r"^[a-z0-9][a-z0-9-.]{0,18}[a-z0-9]{0,1}$",
        })
        .unwrap()
    }

    proptest! {
        /// The hand-written checks accept exactly what the reference's regular expressions accept.
        #[test]
        fn matches_reference_patterns(s in "[a-z0-9.A-Z_/-]{0,45}") {
            for rule in [NameRule::Name, NameRule::AppName, NameRule::Version] {
                prop_assert_eq!(rule.check(&s).is_ok(), reference_regex(rule).is_match(&s), "{:?} {}", rule, s);
            }
        }
    }
}
