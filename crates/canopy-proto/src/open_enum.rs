//! Open enums: the short words of a status report (a workload's kind, health, admin state,
//! accelerator, a pod's phase) as Rust enums that keep the exact JSON spelling they had as
//! strings, in both directions.
//!
//! Why not plain `#[derive(Deserialize)]` enums: agents and control planes of different versions
//! talk to each other, and a word one side does not know yet (a newer agent's new kind or
//! health) must not make the whole status report fail to parse. serde's `#[serde(other)]` would
//! keep the report but lose the word, so the control plane could not show it; here it is kept in
//! an `Other(String)` variant and written back as it came. For the enums that are wire fields
//! this makes reading then writing the identity on every string: a known word is written in the
//! spelling it was read in, an unknown one unchanged. (Input aliases, `"a" | "b"`, break that
//! identity, so they are only for enums read from a field that stays a string, such as
//! [`PodPhase`](crate::PodPhase) from a pod's `state`.)
//!
//! Why a macro rather than a crate, weighed honestly:
//! - serde's derive can do it alone since 1.0.181 (a last variant `#[serde(untagged)]
//!   Other(String)`), but every spelling would then be written twice, in `rename` attributes
//!   and again in `as_str` for `Display` and comparisons, and a wrong type gives serde's vague
//!   "did not match any variant" instead of "expected a string".
//! - `strum` (`EnumString` + `Display` with `#[strum(default)] Other(String)`) gives the string
//!   side from one list of spellings, but not the serde side: that takes `serde_with`
//!   (`SerializeDisplay`, `DeserializeFromStr`) or hand-written impls. strum is already in the
//!   lock file through other crates, serde_with is not: two more direct dependencies, each with
//!   its proc-macro crate, for the crate every agent and server links, to replace the seventy
//!   lines below.
//!
//! The macro is small, has one list of spellings per enum, and its behaviour is pinned by the
//! tests in `tests/open_enums.rs`.

/// Declares an open enum: known variants with their wire spelling (and, for enums that are not
/// wire fields, input aliases), plus `Other(String)` for anything else. Generates `as_str`,
/// `non_empty`, `From<&str>`, `From<String>`, `Display`, `Serialize` and `Deserialize` (as a
/// JSON string). Attributes pass through, so `#[derive(Default)]` with `#[default]` on a
/// variant works.
macro_rules! open_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $(
                $(#[$vmeta:meta])*
                $variant:ident = $text:literal $(| $alias:literal)*
            ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub enum $name {
            $(
                $(#[$vmeta])*
                $variant,
            )+
            /// A word this version does not know (from a newer peer), kept as it was sent.
            Other(String),
        }

        impl $name {
            /// The wire spelling.
            pub fn as_str(&self) -> &str {
                match self {
                    $($name::$variant => $text,)+
                    $name::Other(s) => s,
                }
            }

            /// `None` for an empty word (an unset field), else the word.
            pub fn non_empty(s: &str) -> Option<Self> {
                (!s.is_empty()).then(|| $name::from(s))
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                match s {
                    $($text $(| $alias)* => $name::$variant,)+
                    other => $name::Other(other.to_string()),
                }
            }
        }

        impl From<String> for $name {
            fn from(s: String) -> Self {
                match $name::from(s.as_str()) {
                    $name::Other(_) => $name::Other(s),
                    known => known,
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <String as serde::Deserialize>::deserialize(d)?;
                Ok($name::from(s))
            }
        }
    };
}

pub(crate) use open_enum;

/// Deserializes an optional open enum where an empty string means absent (as it did when the
/// field was a `String` skipped when empty).
pub(crate) fn empty_is_none<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: From<String>,
{
    let s: Option<String> = serde::Deserialize::deserialize(d)?;
    Ok(s.filter(|s| !s.is_empty()).map(T::from))
}
