//! The one reader of `key=value` text, wherever a person or a query writes it: CLI flags
//! (`--label`, `--namespace`, `--set`, `--values`, `canopy edge label`, `canopy agent --label`)
//! and the `labels` list filter of the REST API (`k=v[,k=v]`). It lives here, below the CLI and
//! the server, so that both refuse the same inputs with the same words.
//!
//! One set of rules:
//!
//! - the key is everything before the first `=`, the value everything after it (so a value may
//!   itself contain `=`, a key never does);
//! - whitespace around the key and around the value is dropped;
//! - neither may be empty (an empty string is written as the JSON `""` where values are typed,
//!   e.g. `--set web.motto='""'`).
//!
//! Labels add the reference's rule for each key and value (1–40 characters of
//! `^[a-z0-9]([-_.=,a-z0-9/]{0,38}[a-z0-9])?$`), see [`check_label`].

/// Longest label key or value.
pub const MAX_LABEL_PART: usize = 40;

/// Most items of a `labels` list filter (the reference's limit).
pub const MAX_LABEL_FILTERS: usize = 20;

/// What the reference's label rule asks, for messages.
pub const LABEL_RULE: &str = "must be 1-40 characters: lowercase letters, digits and - _ . = , /, \
                              starting and ending with a lowercase letter or digit";

/// A `key=value` text that breaks the rules. The messages quote the text as given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PairError {
    /// There is no `=`.
    #[error("{given:?} is not KEY=VALUE: there is no '='")]
    NoEquals { given: String },
    /// Nothing (or only spaces) before the `=`.
    #[error("{given:?} is not KEY=VALUE: the key before '=' is empty")]
    EmptyKey { given: String },
    /// Nothing (or only spaces) after the `=`.
    #[error("{given:?} is not KEY=VALUE: the value after '=' is empty")]
    EmptyValue { given: String },
    /// A label key breaks the reference's label rule.
    #[error("label key {key:?} {LABEL_RULE}")]
    LabelKey { key: String },
    /// A label value breaks the reference's label rule.
    #[error("label value {value:?} of key {key:?} {LABEL_RULE}")]
    LabelValue { key: String, value: String },
    /// A `labels` list filter with too many items.
    #[error("at most {MAX_LABEL_FILTERS} label filters are allowed (got {got})")]
    TooManyFilters { got: usize },
}

/// Splits `key=value` by the rules of this module: both sides trimmed, neither empty.
pub fn parse_pair(given: &str) -> Result<(String, String), PairError> {
    let (key, value) = given.split_once('=').ok_or_else(|| PairError::NoEquals {
        given: given.to_owned(),
    })?;
    let (key, value) = (key.trim(), value.trim());
    if key.is_empty() {
        return Err(PairError::EmptyKey {
            given: given.to_owned(),
        });
    }
    if value.is_empty() {
        return Err(PairError::EmptyValue {
            given: given.to_owned(),
        });
    }
    Ok((key.to_owned(), value.to_owned()))
}

/// A label `key=value`: [`parse_pair`], then the reference's label rule on both sides.
pub fn parse_label(given: &str) -> Result<(String, String), PairError> {
    let (key, value) = parse_pair(given)?;
    check_label(&key, &value)?;
    Ok((key, value))
}

/// The reference's label rule for a key and its value.
pub fn check_label(key: &str, value: &str) -> Result<(), PairError> {
    if !label_part_ok(key) {
        return Err(PairError::LabelKey {
            key: key.to_owned(),
        });
    }
    if !label_part_ok(value) {
        return Err(PairError::LabelValue {
            key: key.to_owned(),
            value: value.to_owned(),
        });
    }
    Ok(())
}

/// Label key and value rule of the reference: `^[a-z0-9]([-_.=,a-z0-9/]{0,38}[a-z0-9])?$`.
pub fn label_part_ok(s: &str) -> bool {
    let b = s.as_bytes();
    let end = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    let mid = |c: u8| end(c) || matches!(c, b'-' | b'_' | b'.' | b'=' | b',' | b'/');
    match b {
        [] => false,
        [only] => end(*only),
        [first, middle @ .., last] => {
            b.len() <= MAX_LABEL_PART && end(*first) && end(*last) && middle.iter().all(|c| mid(*c))
        }
    }
}

/// One item of a `labels` list filter, `k=v[,k=v]`: its pairs, each read with [`parse_pair`]
/// (empty parts between commas are skipped). The values are compared with labels, not stored,
/// so they are not held to the label rule: a filter for a value no label can have matches
/// nothing.
pub fn parse_label_filter(item: &str) -> Result<Vec<(String, String)>, PairError> {
    item.split(',')
        .filter(|part| !part.trim().is_empty())
        .map(parse_pair)
        .collect()
}

/// The items of a `labels` list filter (at most [`MAX_LABEL_FILTERS`]), each read with
/// [`parse_label_filter`]. The error says which item (`labels[1]: ...`).
pub fn parse_label_filters(items: &[String]) -> Result<Vec<Vec<(String, String)>>, String> {
    if items.len() > MAX_LABEL_FILTERS {
        return Err(format!(
            "labels: {}",
            PairError::TooManyFilters { got: items.len() }
        ));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, item)| parse_label_filter(item).map_err(|e| format!("labels[{i}]: {e}")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pair(k: &str, v: &str) -> (String, String) {
        (k.to_owned(), v.to_owned())
    }

    #[test]
    fn pairs_split_at_the_first_equals_and_are_trimmed() {
        assert_eq!(parse_pair("web=ns1"), Ok(pair("web", "ns1")));
        assert_eq!(parse_pair(" web = ns1 "), Ok(pair("web", "ns1")));
        assert_eq!(parse_pair("a=b=c"), Ok(pair("a", "b=c")));
        assert_eq!(parse_pair("a.b[0]=x y"), Ok(pair("a.b[0]", "x y")));
    }

    #[test]
    fn pairs_need_an_equals_a_key_and_a_value() {
        assert_eq!(
            parse_pair("web"),
            Err(PairError::NoEquals {
                given: "web".into()
            })
        );
        assert!(matches!(
            parse_pair(" =ns"),
            Err(PairError::EmptyKey { .. })
        ));
        assert!(matches!(
            parse_pair("web= "),
            Err(PairError::EmptyValue { .. })
        ));
        assert_eq!(
            parse_pair("web=").unwrap_err().to_string(),
            "\"web=\" is not KEY=VALUE: the value after '=' is empty"
        );
    }

    #[test]
    fn labels_follow_the_reference_rule() {
        assert_eq!(parse_label("site=paris"), Ok(pair("site", "paris")));
        assert_eq!(
            parse_label("example.com/tier=a,b"),
            Ok(pair("example.com/tier", "a,b"))
        );
        assert_eq!(
            parse_label("Site=paris").unwrap_err(),
            PairError::LabelKey { key: "Site".into() }
        );
        let e = parse_label("site=Paris").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("label value \"Paris\" of key \"site\" must be 1-40"),
            "{e}"
        );
        assert!(parse_label(&format!("k={}", "a".repeat(41))).is_err());
        assert!(parse_label(&format!("k={}", "a".repeat(40))).is_ok());
        assert!(parse_label("k=-a").is_err());
        assert!(parse_label("k=a-").is_err());
    }

    #[test]
    fn label_filters_are_lists_of_pairs() {
        assert_eq!(
            parse_label_filter("a=1, b=2,"),
            Ok(vec![pair("a", "1"), pair("b", "2")])
        );
        let items = vec!["a=1".to_owned(), "c".to_owned()];
        assert_eq!(
            parse_label_filters(&items).unwrap_err(),
            "labels[1]: \"c\" is not KEY=VALUE: there is no '='"
        );
        assert!(
            parse_label_filters(&["k=".to_owned()])
                .unwrap_err()
                .contains("empty")
        );
        let many = vec!["a=1".to_owned(); MAX_LABEL_FILTERS + 1];
        assert!(
            parse_label_filters(&many)
                .unwrap_err()
                .contains("at most 20")
        );
        assert_eq!(parse_label_filters(&[]).unwrap(), Vec::<Vec<_>>::new());
    }

    proptest! {
        /// Whatever `key=value` is written from valid parts reads back as those parts.
        #[test]
        fn written_pairs_read_back(
            key in "[a-z0-9][a-z0-9./_-]{0,20}",
            value in "[^\\s][^\\n]{0,20}[^\\s]|[^\\s=]",
        ) {
            let key = key.trim().to_owned();
            prop_assume!(!key.is_empty());
            prop_assert_eq!(parse_pair(&format!("{key}={value}")), Ok((key, value)));
        }
    }
}
