//! Hardened YAML reading. Every YAML byte that reaches Canopy from a user (uploads, artifacts,
//! values) goes through here, so the limits against hostile input live in one place: nesting
//! depth, alias expansion (billion laughs), node and document counts, total size.

use serde_saphyr::{Budget, Options};

/// Deepest nesting accepted in a YAML document.
pub const MAX_DEPTH: usize = 64;
/// Most documents in one file.
pub const MAX_DOCUMENTS: usize = 256;
/// Most YAML nodes in one file.
pub const MAX_NODES: usize = 200_000;
/// Most alias uses in one file.
pub const MAX_ALIASES: usize = 1_000;

fn options() -> Options {
    let mut budget = Budget::default();
    budget.max_depth = MAX_DEPTH;
    budget.max_documents = MAX_DOCUMENTS;
    budget.max_nodes = MAX_NODES;
    budget.max_aliases = MAX_ALIASES;
    budget.max_anchors = MAX_ALIASES;
    budget.max_events = 4 * MAX_NODES;
    budget.max_recorded_anchor_events = 100_000;
    budget.max_recorded_anchor_bytes = 4 * 1024 * 1024;
    let mut opts = Options::default();
    opts.budget = Some(budget);
    opts.alias_limits.max_total_replayed_events = 100_000;
    opts.alias_limits.max_replay_stack_depth = 16;
    opts.with_snippet = false;
    // Comments are never needed (values files are kept as raw text). Not emitting them also
    // lifts the parser's cap of 32 consecutive buffered comments, which real Helm values
    // files (long commented-out examples inside a list) exceed.
    opts.emit_comments = false;
    // YAML 1.2 booleans only: `y`, `no`, `on` stay strings.
    opts.strict_booleans = true;
    opts
}

/// Parses every document of a (multi-document) YAML text into JSON values, refusing input that
/// breaks the limits above. Empty documents are skipped.
pub fn parse_documents(text: &str) -> Result<Vec<serde_json::Value>, String> {
    serde_saphyr::from_multiple_with_options::<serde_json::Value>(text, options())
        .map_err(|e| e.to_string())
}

/// Parses every document of a (multi-document) YAML text into typed values under the same
/// limits (for callers that need their own value tree, e.g. one that keeps source spans).
pub fn parse_documents_as<T: serde::de::DeserializeOwned>(text: &str) -> Result<Vec<T>, String> {
    serde_saphyr::from_multiple_with_options::<T>(text, options()).map_err(|e| e.to_string())
}

/// Parses one YAML document into a typed value under the same limits.
pub fn parse_one<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, String> {
    serde_saphyr::from_str_with_options::<T>(text, options()).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_multi_documents() {
        let docs = parse_documents("a: 1\n---\nb: [x, y]\n").unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[1]["b"][1], "y");
    }

    #[test]
    fn accepts_long_comment_runs() {
        let mut s = String::from("disks:\n");
        for i in 0..200 {
            s.push_str(&format!("  # - name: example-{i}\n"));
        }
        s.push_str("  - name: real\n");
        assert_eq!(parse_documents(&s).unwrap()[0]["disks"][0]["name"], "real");
    }

    #[test]
    fn refuses_alias_bomb() {
        let mut s = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..12 {
            let p = i - 1;
            s.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
            ));
        }
        assert!(parse_documents(&s).is_err());
    }

    #[test]
    fn refuses_deep_nesting() {
        let s = format!("{}1{}", "[".repeat(500), "]".repeat(500));
        assert!(parse_documents(&s).is_err());
        let mut block = String::new();
        for i in 0..200 {
            block.push_str(&" ".repeat(i));
            block.push_str("k:\n");
        }
        assert!(parse_documents(&block).is_err());
    }
}
