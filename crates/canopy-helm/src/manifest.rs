//! Reading `helm template` output: YAML documents separated by `---`, each preceded by
//! `# Source: <chart>/templates/<file>` naming the template it came from. Each document is read
//! on its own, so errors and the later analysis can name the template file.
//!
//! The reader has the limits of the hardened YAML reader (`canopy_core::yaml`: depth, nodes,
//! aliases, documents) with one difference of meaning: Kubernetes reads manifests as YAML 1.1,
//! where `defaultMode: 0644` is octal (420). Charts write file modes that way, so numbers with
//! a leading zero are read as octal here too (core's reader, for Canopy's own YAML 1.2 files,
//! reads them otherwise). YAML 1.2 booleans are kept (`yes` stays a string), as in core.

use serde_json::Value;

/// Most documents in one rendered chart.
pub const MAX_DOCUMENTS: usize = 2_000;

/// One rendered Kubernetes object.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    /// The template file (`web/templates/deployment.yaml`), empty when Helm did not say.
    pub source: String,
    /// The object.
    pub object: Value,
}

impl Document {
    /// `kind` (empty when missing).
    pub fn kind(&self) -> &str {
        self.object
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or("")
    }

    /// `apiVersion` (empty when missing).
    pub fn api_version(&self) -> &str {
        self.object
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or("")
    }

    /// `metadata.name` (empty when missing).
    pub fn name(&self) -> &str {
        self.object
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("")
    }

    /// `metadata.namespace` (empty when missing).
    pub fn namespace(&self) -> &str {
        self.object
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or("")
    }

    /// The value of annotation `key`, if any.
    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.object
            .pointer("/metadata/annotations")
            .and_then(Value::as_object)
            .and_then(|m| m.get(key))
            .and_then(Value::as_str)
    }
}

/// Rendered output that is not a list of Kubernetes objects.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("template {}: rendered invalid YAML: {message}", show(template))]
    InvalidYaml { template: String, message: String },
    #[error(
        "template {}: rendered a document that is not a Kubernetes object (a mapping with \
         apiVersion and kind)",
        show(template)
    )]
    NotAnObject { template: String },
    #[error("the chart rendered more than {MAX_DOCUMENTS} documents")]
    TooManyDocuments,
}

fn show(source: &str) -> &str {
    if source.is_empty() {
        "(unknown)"
    } else {
        source
    }
}

fn read_options() -> serde_saphyr::Options {
    use canopy_core::yaml::{MAX_ALIASES, MAX_DEPTH, MAX_DOCUMENTS, MAX_NODES};
    let mut budget = serde_saphyr::Budget::default();
    budget.max_depth = MAX_DEPTH;
    budget.max_documents = MAX_DOCUMENTS;
    budget.max_nodes = MAX_NODES;
    budget.max_aliases = MAX_ALIASES;
    budget.max_anchors = MAX_ALIASES;
    budget.max_events = 4 * MAX_NODES;
    budget.max_recorded_anchor_events = 100_000;
    budget.max_recorded_anchor_bytes = 4 * 1024 * 1024;
    let mut opts = serde_saphyr::Options::default();
    opts.budget = Some(budget);
    opts.alias_limits.max_total_replayed_events = 100_000;
    opts.alias_limits.max_replay_stack_depth = 16;
    opts.with_snippet = false;
    opts.emit_comments = false;
    opts.strict_booleans = true;
    opts.legacy_octal_numbers = true;
    opts
}

/// Reads one chunk of the output (normally one document).
fn read_chunk(text: &str) -> Result<Vec<Value>, String> {
    serde_saphyr::from_multiple_with_options::<Value>(text, read_options())
        .map_err(|e| e.to_string())
}

fn is_separator(line: &str) -> bool {
    line == "---" || line.starts_with("--- ") || line.starts_with("---\t")
}

/// Splits and reads `helm template` output.
pub fn parse(output: &str) -> Result<Vec<Document>, ManifestError> {
    let mut docs = Vec::new();
    let mut chunk = String::new();
    let mut source = String::new();
    let mut flush = |chunk: &mut String, source: &mut String| -> Result<(), ManifestError> {
        let text = std::mem::take(chunk);
        let src = std::mem::take(source);
        if text.trim().is_empty() {
            return Ok(());
        }
        let values = read_chunk(&text).map_err(|message| ManifestError::InvalidYaml {
            template: src.clone(),
            message,
        })?;
        for v in values {
            match v {
                Value::Null => {}
                Value::Object(_)
                    if v.get("kind").is_some_and(Value::is_string)
                        && v.get("apiVersion").is_some_and(Value::is_string) =>
                {
                    if docs.len() >= MAX_DOCUMENTS {
                        return Err(ManifestError::TooManyDocuments);
                    }
                    docs.push(Document {
                        source: src.clone(),
                        object: v,
                    });
                }
                _ => {
                    return Err(ManifestError::NotAnObject {
                        template: src.clone(),
                    });
                }
            }
        }
        Ok(())
    };
    for line in output.split_inclusive('\n') {
        let bare = line.trim_end_matches(['\n', '\r']);
        if is_separator(bare) {
            flush(&mut chunk, &mut source)?;
            // Anything after `--- ` on the same line is document content.
            let rest = bare[3..].trim_start();
            if !rest.is_empty() {
                chunk.push_str(rest);
                chunk.push('\n');
            }
            continue;
        }
        if chunk.trim().is_empty()
            && source.is_empty()
            && let Some(s) = bare.strip_prefix("# Source: ")
        {
            source = s.trim().to_string();
        }
        chunk.push_str(line);
    }
    flush(&mut chunk, &mut source)?;
    Ok(docs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_with_sources() {
        let out = "---\n# Source: web/templates/sa.yaml\napiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: a\n---\n# Source: web/templates/empty.yaml\n# nothing\n---\n# Source: web/templates/cm.yaml\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: b\ndata:\n  x: |\n    line\n";
        let docs = parse(out).unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0].source, "web/templates/sa.yaml");
        assert_eq!(docs[0].kind(), "ServiceAccount");
        assert_eq!(docs[1].source, "web/templates/cm.yaml");
        assert_eq!(docs[1].object["data"]["x"], "line\n");
    }

    #[test]
    fn file_modes_are_octal_as_kubernetes_reads_them() {
        let docs = parse(
            "apiVersion: v1\nkind: Pod\nspec:\n  defaultMode: 0644\n  mode: 420\n  flag: yes\n",
        )
        .unwrap();
        assert_eq!(docs[0].object["spec"]["defaultMode"], 420);
        assert_eq!(docs[0].object["spec"]["mode"], 420);
        assert_eq!(docs[0].object["spec"]["flag"], "yes");
    }

    #[test]
    fn names_the_template_of_bad_yaml() {
        let out = "---\n# Source: web/templates/ok.yaml\napiVersion: v1\nkind: ConfigMap\n---\n# Source: web/templates/bad.yaml\napiVersion: v1\nkind: [ConfigMap\n";
        match parse(out).unwrap_err() {
            ManifestError::InvalidYaml { template, .. } => {
                assert_eq!(template, "web/templates/bad.yaml")
            }
            e => panic!("{e}"),
        }
        let e = parse("---\n# Source: web/templates/list.yaml\n- a\n- b\n").unwrap_err();
        assert!(e.to_string().contains("web/templates/list.yaml"), "{e}");
        let e = parse("---\n# Source: web/templates/nokind.yaml\napiVersion: v1\n").unwrap_err();
        assert!(matches!(e, ManifestError::NotAnObject { .. }), "{e}");
    }
}
