//! Choosing the files of `canopy catalog upload` and reading what they define.
//!
//! The server resolves `valuesFileName` against the names files were uploaded under, so names
//! are relative to the directory the user gave (`web/app.yaml`, not `/home/me/pkgs/web/app.yaml`).
//! Walking skips hidden files and directories (editor and VCS droppings) and anything that is not
//! YAML or a tarball; a file named explicitly is always sent. Tarballs are sent as they are: the
//! server unpacks them.
//!
//! [`summarize`] reads the entity headers locally, only to tell the user what an upload created
//! or updated; the server remains the judge of validity, so files it cannot read are skipped.

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use canopy_client::UploadFile;
use serde::Serialize;
use serde_json::Value;

/// A file chosen for upload: where it is, and the name it is uploaded under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub path: PathBuf,
    pub name: String,
}

/// True for the files a directory walk picks up: YAML files, workload templates (`*.j2`,
/// `*.jinja`, `*.jinja2`, named by `templateFileName`) and gzipped tarballs.
pub fn is_upload_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    [
        ".yaml", ".yml", ".j2", ".jinja", ".jinja2", ".tgz", ".tar.gz",
    ]
    .iter()
    .any(|ext| lower.ends_with(ext))
}

fn is_tarball_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    lower.ends_with(".tgz") || lower.ends_with(".tar.gz")
}

fn is_hidden(name: &str) -> bool {
    name.starts_with('.')
}

/// The files to upload for the paths given on the command line, in a stable order. Refuses
/// paths that do not exist, an empty result, and two files that would share an upload name.
pub fn discover(paths: &[PathBuf]) -> anyhow::Result<Vec<Found>> {
    let mut found = Vec::new();
    for path in paths {
        let meta = fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
        if meta.is_dir() {
            walk(path, path, &mut found)?;
        } else {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .with_context(|| format!("{} is not a file name", path.display()))?;
            found.push(Found {
                path: path.clone(),
                name,
            });
        }
    }
    let mut seen: HashMap<&str, &Path> = HashMap::new();
    for f in &found {
        if let Some(other) = seen.insert(&f.name, &f.path)
            && other != f.path
        {
            bail!(
                "{} and {} would both be uploaded as {}; upload them separately",
                other.display(),
                f.path.display(),
                f.name
            );
        }
    }
    let mut unique = BTreeSet::new();
    found.retain(|f| unique.insert(f.name.clone()));
    if found.is_empty() {
        let shown: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
        bail!(
            "no YAML files (*.yaml, *.yml) or tarballs (*.tgz, *.tar.gz) found in {}",
            shown.join(", ")
        );
    }
    Ok(found)
}

fn walk(dir: &Path, root: &Path, found: &mut Vec<Found>) -> anyhow::Result<()> {
    let read = |e| format!("cannot read directory {}: {e}", dir.display());
    let mut entries = fs::read_dir(dir)
        .map_err(|e| anyhow::anyhow!(read(e)))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!(read(e)))?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let file_name = entry.file_name().to_string_lossy().into_owned();
        if is_hidden(&file_name) {
            continue;
        }
        let path = entry.path();
        let kind = entry
            .file_type()
            .with_context(|| format!("cannot read {}", path.display()))?;
        if kind.is_dir() {
            walk(&path, root, found)?;
        } else if (kind.is_file() || (kind.is_symlink() && path.is_file()))
            && is_upload_name(&file_name)
        {
            // Symlinked directories are not followed (no loops); symlinked files are.
            found.push(Found {
                name: relative_name(root, &path),
                path,
            });
        }
    }
    Ok(())
}

/// `path` relative to `root`, with `/` separators whatever the platform.
fn relative_name(root: &Path, path: &Path) -> String {
    let rel = path.strip_prefix(root).unwrap_or(path);
    rel.components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

/// Reads the chosen files.
pub fn read_all(found: &[Found]) -> anyhow::Result<Vec<UploadFile>> {
    found
        .iter()
        .map(|f| {
            let content =
                fs::read(&f.path).with_context(|| format!("cannot read {}", f.path.display()))?;
            Ok(UploadFile {
                name: f.name.clone(),
                content,
            })
        })
        .collect()
}

/// Catalog entity types, in the order the server applies them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum EntityKind {
    Registry,
    Application,
    Artifact,
    DeploymentPackage,
}

impl EntityKind {
    pub fn label(self) -> &'static str {
        match self {
            EntityKind::Registry => "registry",
            EntityKind::Application => "application",
            EntityKind::Artifact => "artifact",
            EntityKind::DeploymentPackage => "deployment-package",
        }
    }
}

/// An entity an upload defines.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct EntityRef {
    pub kind: EntityKind,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

impl std::fmt::Display for EntityRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.version {
            Some(v) => write!(f, "{} {}:{v}", self.kind.label(), self.name),
            None => write!(f, "{} {}", self.kind.label(), self.name),
        }
    }
}

/// Limits on what is read from a tarball just to summarize it.
const MAX_TAR_ENTRIES: usize = 1_000;
const MAX_TAR_FILE: u64 = 10 * 1024 * 1024;

/// The entities the files define, in apply order, each once. Best effort: unreadable files and
/// documents without `specSchema` (values files) contribute nothing.
pub fn summarize(files: &[UploadFile]) -> Vec<EntityRef> {
    let mut all = BTreeSet::new();
    for f in files {
        if is_tarball_name(&f.name) {
            summarize_tarball(&f.content, &mut all);
        } else if let Ok(text) = std::str::from_utf8(&f.content) {
            all.extend(entities_in(text));
        }
    }
    all.into_iter().collect()
}

fn summarize_tarball(bytes: &[u8], all: &mut BTreeSet<EntityRef>) {
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(bytes));
    let Ok(entries) = archive.entries() else {
        return;
    };
    for entry in entries.take(MAX_TAR_ENTRIES) {
        let Ok(entry) = entry else { return };
        let is_yaml = entry
            .path()
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .is_some_and(|n| !is_tarball_name(&n) && is_upload_name(&n));
        if !entry.header().entry_type().is_file() || !is_yaml || entry.size() > MAX_TAR_FILE {
            continue;
        }
        let mut text = String::new();
        if entry.take(MAX_TAR_FILE).read_to_string(&mut text).is_ok() {
            all.extend(entities_in(&text));
        }
    }
}

/// The entities a (multi-document) YAML text defines.
pub fn entities_in(text: &str) -> Vec<EntityRef> {
    let Ok(docs) = canopy_core::yaml::parse_documents(text) else {
        return Vec::new();
    };
    docs.iter().filter_map(entity_of).collect()
}

fn scalar(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn entity_of(doc: &Value) -> Option<EntityRef> {
    let kind = match doc.get("specSchema")?.as_str()? {
        "Registry" => EntityKind::Registry,
        "Application" => EntityKind::Application,
        "Artifact" => EntityKind::Artifact,
        "DeploymentPackage" | "Deployment-Package" => EntityKind::DeploymentPackage,
        _ => return None,
    };
    let name = scalar(doc.get("name"))?;
    let version = match kind {
        EntityKind::Application | EntityKind::DeploymentPackage => {
            Some(scalar(doc.get("version"))?)
        }
        EntityKind::Registry | EntityKind::Artifact => None,
    };
    Some(EntityRef {
        kind,
        name,
        version,
    })
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    fn write(root: &Path, rel: &str, content: &str) {
        let path = root.join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, content).unwrap();
    }

    fn names(found: &[Found]) -> Vec<&str> {
        found.iter().map(|f| f.name.as_str()).collect()
    }

    #[test]
    fn walks_directories_with_relative_names() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(root, "app.yaml", "a: 1");
        write(root, "web/values.yml", "a: 1");
        write(root, "web/deep/dp.YAML", "a: 1");
        write(root, "web/web.yaml.j2", "containers: []");
        write(root, "bundle.tar.gz", "x");
        write(root, "other.tgz", "x");
        write(root, "README.md", "x");
        write(root, "notes.txt", "x");
        let found = discover(&[root.to_path_buf()]).unwrap();
        assert_eq!(
            names(&found),
            [
                "app.yaml",
                "bundle.tar.gz",
                "other.tgz",
                "web/deep/dp.YAML",
                "web/values.yml",
                "web/web.yaml.j2"
            ]
        );
        assert_eq!(found[3].path, root.join("web/deep/dp.YAML"));
    }

    #[test]
    fn skips_hidden_files_and_directories() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(root, ".hidden.yaml", "a: 1");
        write(root, ".git/config.yaml", "a: 1");
        write(root, "pkg/.swap.yaml", "a: 1");
        write(root, "pkg/app.yaml", "a: 1");
        let found = discover(&[root.to_path_buf()]).unwrap();
        assert_eq!(names(&found), ["pkg/app.yaml"]);
    }

    #[test]
    fn explicit_files_keep_their_base_name_whatever_the_extension() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(root, "a/.app.yaml", "x");
        write(root, "b/bundle.tgz", "x");
        write(root, "c/values.txt", "x");
        let found = discover(&[
            root.join("a/.app.yaml"),
            root.join("b/bundle.tgz"),
            root.join("c/values.txt"),
        ])
        .unwrap();
        assert_eq!(names(&found), [".app.yaml", "bundle.tgz", "values.txt"]);
    }

    #[test]
    fn mixes_directories_and_files() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(root, "pkg/app.yaml", "x");
        write(root, "pkg/values/v.yaml", "x");
        write(root, "extra/registry.yaml", "x");
        let found = discover(&[root.join("pkg"), root.join("extra/registry.yaml")]).unwrap();
        assert_eq!(
            names(&found),
            ["app.yaml", "values/v.yaml", "registry.yaml"]
        );
    }

    #[test]
    fn refuses_name_clashes_missing_paths_and_empty_results() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(root, "a/app.yaml", "x");
        write(root, "b/app.yaml", "x");
        write(root, "empty/readme.md", "x");
        let e = discover(&[root.join("a"), root.join("b")]).unwrap_err();
        assert!(
            e.to_string().contains("would both be uploaded as app.yaml"),
            "{e}"
        );
        let e = discover(&[root.join("nope")]).unwrap_err();
        assert!(e.to_string().starts_with("cannot read "), "{e}");
        let e = discover(&[root.join("empty")]).unwrap_err();
        assert!(e.to_string().starts_with("no YAML files"), "{e}");
        // The same file named twice is sent once.
        let found = discover(&[root.join("a"), root.join("a")]).unwrap();
        assert_eq!(names(&found), ["app.yaml"]);
    }

    #[test]
    fn reads_contents() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "x/app.yaml", "hello");
        let found = discover(&[dir.path().to_path_buf()]).unwrap();
        let files = read_all(&found).unwrap();
        assert_eq!(files[0].name, "x/app.yaml");
        assert_eq!(files[0].content, b"hello");
    }

    const APP: &str = "specSchema: Application\nschemaVersion: \"0.1\"\nname: web\nversion: 1.0\n\
                       ---\nspecSchema: Registry\nname: helm\n";

    #[test]
    fn summarizes_entities_in_apply_order() {
        let files = vec![
            UploadFile {
                name: "dp.yaml".into(),
                content: b"specSchema: Deployment-Package\nname: stack\nversion: \"0.1.0\"\n"
                    .to_vec(),
            },
            UploadFile {
                name: "app.yaml".into(),
                content: APP.as_bytes().to_vec(),
            },
            UploadFile {
                name: "values.yaml".into(),
                content: b"image: {{ .x }}\n".to_vec(),
            },
            UploadFile {
                name: "again.yaml".into(),
                content: b"specSchema: Registry\nname: helm\n".to_vec(),
            },
        ];
        let shown: Vec<String> = summarize(&files).iter().map(|e| e.to_string()).collect();
        assert_eq!(
            shown,
            [
                "registry helm",
                "application web:1.0",
                "deployment-package stack:0.1.0"
            ]
        );
    }

    #[test]
    fn summarizes_tarballs() {
        let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
            Vec::new(),
            flate2::Compression::fast(),
        ));
        let mut header = tar::Header::new_gnu();
        header.set_size(APP.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder
            .append_data(&mut header, "pkg/app.yaml", APP.as_bytes())
            .unwrap();
        let mut gz = builder.into_inner().unwrap();
        gz.flush().unwrap();
        let bytes = gz.finish().unwrap();
        let files = vec![UploadFile {
            name: "pkg.tgz".into(),
            content: bytes,
        }];
        let shown: Vec<String> = summarize(&files).iter().map(|e| e.to_string()).collect();
        assert_eq!(shown, ["registry helm", "application web:1.0"]);
        // Garbage that claims to be a tarball is skipped, not fatal.
        let junk = vec![UploadFile {
            name: "junk.tar.gz".into(),
            content: b"not gzip".to_vec(),
        }];
        assert!(summarize(&junk).is_empty());
    }
}
