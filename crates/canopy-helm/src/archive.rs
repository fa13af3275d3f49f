//! Chart archives are hostile input: a registry anyone can push to may serve a gzip bomb, a
//! tarball of a million files, entries that climb out of the chart (`../`, `/etc/...`), links
//! and device files. Every archive is read once here, before it enters the cache, as Helm would
//! read it (gzip members concatenated, pax and GNU long names applied), and refused when it
//! breaks a rule; the error names the entry. Subcharts (`charts/*.tgz`) are read the same way,
//! against the same budget.
//!
//! The archive is never extracted to disk by Canopy: Helm reads it in memory when rendering.

use std::io::{self, Read};
use std::path::{Component, Path};

use flate2::read::MultiGzDecoder;
use serde::Deserialize;

/// Limits on one chart archive (subcharts included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveLimits {
    /// Largest archive as fetched (gzip-compressed).
    pub max_compressed_bytes: u64,
    /// Most bytes after decompression (all tar data, subcharts' included).
    pub max_uncompressed_bytes: u64,
    /// Largest single file.
    pub max_file_bytes: u64,
    /// Most entries (files and directories, subcharts' included).
    pub max_entries: usize,
    /// Deepest path (components, the chart's top directory included).
    pub max_path_depth: usize,
    /// Longest path in bytes.
    pub max_path_bytes: usize,
    /// Deepest nesting of subchart archives (`charts/x.tgz` inside `charts/y.tgz`, ...).
    pub max_subchart_nesting: usize,
}

impl Default for ArchiveLimits {
    fn default() -> Self {
        ArchiveLimits {
            max_compressed_bytes: 10 * 1024 * 1024,
            max_uncompressed_bytes: 64 * 1024 * 1024,
            max_file_bytes: 8 * 1024 * 1024,
            max_entries: 5_000,
            max_path_depth: 16,
            max_path_bytes: 1024,
            max_subchart_nesting: 4,
        }
    }
}

/// What a chart says about itself (`Chart.yaml` at the top of the archive).
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChartMeta {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub app_version: String,
    /// One sentence about the chart (what an import makes the application's description).
    #[serde(default)]
    pub description: String,
    /// `application` (default) or `library`.
    #[serde(default, rename = "type")]
    pub chart_type: String,
}

/// A rule broken by an archive: which entry (empty for the archive as a whole) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveViolation {
    pub entry: String,
    pub reason: String,
}

impl ArchiveViolation {
    fn new(entry: impl Into<String>, reason: impl Into<String>) -> ArchiveViolation {
        ArchiveViolation {
            entry: entry.into(),
            reason: reason.into(),
        }
    }
}

/// Counts what has been read so far, across nested archives.
struct Budget<'l> {
    limits: &'l ArchiveLimits,
    uncompressed: u64,
    entries: usize,
}

/// A reader that fails once more than the budget's uncompressed bytes went through it.
struct Counted<'b, 'l, R> {
    inner: R,
    budget: &'b std::cell::RefCell<Budget<'l>>,
}

impl<R: Read> Read for Counted<'_, '_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let mut b = self.budget.borrow_mut();
        b.uncompressed += n as u64;
        if b.uncompressed > b.limits.max_uncompressed_bytes {
            return Err(io::Error::other(OVER_BUDGET));
        }
        Ok(n)
    }
}

const OVER_BUDGET: &str = "canopy-helm: uncompressed size over budget";

/// Reads a chart archive and checks every rule; returns its `Chart.yaml`. `expect_name` and
/// `expect_version` are what the application asked for: the chart must say the same.
pub fn inspect(
    bytes: &[u8],
    limits: &ArchiveLimits,
    expect_name: &str,
    expect_version: &str,
) -> Result<ChartMeta, ArchiveViolation> {
    if bytes.len() as u64 > limits.max_compressed_bytes {
        return Err(ArchiveViolation::new(
            "",
            format!(
                "is {} bytes, more than the limit of {}",
                bytes.len(),
                limits.max_compressed_bytes
            ),
        ));
    }
    let budget = std::cell::RefCell::new(Budget {
        limits,
        uncompressed: 0,
        entries: 0,
    });
    let chart_yaml = walk(bytes, &budget, 0, "")?;
    let Some(chart_yaml) = chart_yaml else {
        return Err(ArchiveViolation::new(
            "",
            "has no Chart.yaml in its top directory",
        ));
    };
    let text = String::from_utf8(chart_yaml)
        .map_err(|_| ArchiveViolation::new("Chart.yaml", "is not UTF-8"))?;
    let meta: ChartMeta = canopy_core::yaml::parse_one(&text)
        .map_err(|e| ArchiveViolation::new("Chart.yaml", format!("is not valid YAML: {e}")))?;
    if meta.name != expect_name {
        return Err(ArchiveViolation::new(
            "Chart.yaml",
            format!(
                "names the chart {:?}, not {expect_name:?} as the application says",
                meta.name
            ),
        ));
    }
    let norm = |v: &str| v.trim_start_matches('v').replace('_', "+");
    if norm(&meta.version) != norm(expect_version) {
        return Err(ArchiveViolation::new(
            "Chart.yaml",
            format!(
                "has version {:?}, not {expect_version:?} as the application says",
                meta.version
            ),
        ));
    }
    Ok(meta)
}

/// One file of the chart (`values.yaml`, `README.md`, ... relative to its top directory), read
/// from an archive that [`inspect`] accepted; `None` when there is no such file.
pub fn read_file(
    bytes: &[u8],
    limits: &ArchiveLimits,
    path: &str,
) -> Result<Option<Vec<u8>>, ArchiveViolation> {
    let mut archive = tar::Archive::new(MultiGzDecoder::new(bytes));
    let bad = |e: io::Error| ArchiveViolation::new("", format!("is not a readable archive: {e}"));
    for entry in archive.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        let raw = entry.path_bytes().into_owned();
        let Ok(name) = std::str::from_utf8(&raw) else {
            continue;
        };
        let rest = name
            .trim_start_matches("./")
            .split_once('/')
            .map(|(_, r)| r);
        if rest == Some(path) && entry.header().entry_type() == tar::EntryType::Regular {
            let mut data = Vec::new();
            entry
                .by_ref()
                .take(limits.max_file_bytes + 1)
                .read_to_end(&mut data)
                .map_err(bad)?;
            if data.len() as u64 > limits.max_file_bytes {
                return Err(ArchiveViolation::new(
                    name,
                    "is larger than the limit per file",
                ));
            }
            return Ok(Some(data));
        }
    }
    Ok(None)
}

/// Walks one (possibly nested) archive. Returns the top `Chart.yaml` of the outermost one.
fn walk(
    bytes: &[u8],
    budget: &std::cell::RefCell<Budget<'_>>,
    nesting: usize,
    outer: &str,
) -> Result<Option<Vec<u8>>, ArchiveViolation> {
    let limits = budget.borrow().limits.clone();
    let reader = Counted {
        inner: MultiGzDecoder::new(bytes),
        budget,
    };
    let mut archive = tar::Archive::new(reader);
    let io_err = |entry: &str, e: io::Error| -> ArchiveViolation {
        if e.to_string().contains(OVER_BUDGET) {
            ArchiveViolation::new(
                entry,
                format!(
                    "decompresses to more than the limit of {} bytes",
                    limits.max_uncompressed_bytes
                ),
            )
        } else {
            ArchiveViolation::new(entry, format!("is not a readable gzip-compressed tar: {e}"))
        }
    };
    let entries = archive.entries().map_err(|e| io_err(outer, e))?;
    let mut top: Option<String> = None;
    let mut chart_yaml = None;
    for entry in entries {
        let mut entry = entry.map_err(|e| io_err(outer, e))?;
        let raw_path = entry.path_bytes().into_owned();
        let shown = format!("{outer}{}", String::from_utf8_lossy(&raw_path));
        let kind = entry.header().entry_type();
        // pax global headers (git archive writes one) carry no file.
        if kind == tar::EntryType::XGlobalHeader {
            continue;
        }
        {
            let mut b = budget.borrow_mut();
            b.entries += 1;
            if b.entries > limits.max_entries {
                return Err(ArchiveViolation::new(
                    shown,
                    format!("is past the limit of {} entries", limits.max_entries),
                ));
            }
        }
        let path = std::str::from_utf8(&raw_path)
            .map_err(|_| ArchiveViolation::new(shown.clone(), "has a name that is not UTF-8"))?;
        if path.len() > limits.max_path_bytes {
            return Err(ArchiveViolation::new(
                shown,
                format!("has a path longer than {} bytes", limits.max_path_bytes),
            ));
        }
        if path.contains('\0') || path.contains('\\') {
            return Err(ArchiveViolation::new(
                shown,
                "has a path with NUL or backslash",
            ));
        }
        let mut parts: Vec<&str> = Vec::new();
        for c in Path::new(path).components() {
            match c {
                Component::Normal(p) => parts.push(p.to_str().unwrap_or("")),
                Component::CurDir => {}
                Component::ParentDir => {
                    return Err(ArchiveViolation::new(
                        shown,
                        "climbs out of the chart (\"..\")",
                    ));
                }
                Component::RootDir | Component::Prefix(_) => {
                    return Err(ArchiveViolation::new(shown, "has an absolute path"));
                }
            }
        }
        if parts.is_empty() {
            return Err(ArchiveViolation::new(shown, "has an empty path"));
        }
        if parts.len() > limits.max_path_depth {
            return Err(ArchiveViolation::new(
                shown,
                format!("is deeper than {} directories", limits.max_path_depth),
            ));
        }
        match kind {
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::Directory => {}
            tar::EntryType::Symlink => {
                return Err(ArchiveViolation::new(shown, "is a symbolic link"));
            }
            tar::EntryType::Link => return Err(ArchiveViolation::new(shown, "is a hard link")),
            tar::EntryType::Char | tar::EntryType::Block => {
                return Err(ArchiveViolation::new(shown, "is a device file"));
            }
            tar::EntryType::Fifo => return Err(ArchiveViolation::new(shown, "is a FIFO")),
            other => {
                return Err(ArchiveViolation::new(
                    shown,
                    format!("has an unsupported entry type {other:?}"),
                ));
            }
        }
        match &top {
            None => top = Some(parts[0].to_string()),
            Some(t) if t != parts[0] => {
                return Err(ArchiveViolation::new(
                    shown,
                    format!("is outside the chart's top directory {t:?}"),
                ));
            }
            Some(_) => {}
        }
        if kind == tar::EntryType::Directory {
            continue;
        }
        let size = entry.header().size().map_err(|e| io_err(&shown, e))?;
        if size > limits.max_file_bytes {
            return Err(ArchiveViolation::new(
                shown,
                format!(
                    "is {size} bytes, more than the limit of {} per file",
                    limits.max_file_bytes
                ),
            ));
        }
        let is_chart_yaml = parts.len() == 2 && parts[1] == "Chart.yaml";
        let is_subchart = parts.len() == 3
            && parts[1] == "charts"
            && (parts[2].ends_with(".tgz") || parts[2].ends_with(".tar.gz"));
        if is_chart_yaml || is_subchart {
            let mut data = Vec::with_capacity(size as usize);
            entry
                .by_ref()
                .take(limits.max_file_bytes + 1)
                .read_to_end(&mut data)
                .map_err(|e| io_err(&shown, e))?;
            if is_chart_yaml {
                chart_yaml = Some(data);
            } else {
                if nesting + 1 > limits.max_subchart_nesting {
                    return Err(ArchiveViolation::new(
                        shown,
                        format!(
                            "nests subcharts deeper than {} levels",
                            limits.max_subchart_nesting
                        ),
                    ));
                }
                let inner = walk(&data, budget, nesting + 1, &format!("{shown}!"))?;
                if inner.is_none() {
                    return Err(ArchiveViolation::new(
                        shown,
                        "is a subchart archive without a Chart.yaml",
                    ));
                }
            }
        } else {
            io::copy(&mut entry, &mut io::sink()).map_err(|e| io_err(&shown, e))?;
        }
    }
    // Reading to the end also reads what follows the tar's end marker, so the budget sees
    // every byte Helm's reader could see.
    let mut rest = archive.into_inner();
    io::copy(&mut rest, &mut io::sink()).map_err(|e| io_err(outer, e))?;
    Ok(chart_yaml)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use flate2::Compression;
    use flate2::write::GzEncoder;

    /// One tar entry for hand-made archives: `(path, type, content)`.
    pub(crate) struct E<'a>(pub &'a str, pub tar::EntryType, pub &'a [u8]);

    /// A gzip-compressed tar of exactly these entries, written with raw headers so that hostile
    /// names (`..`, absolute) get through the builder's own checks.
    pub(crate) fn tgz(entries: &[E<'_>]) -> Vec<u8> {
        let mut b = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::fast()));
        for E(path, kind, data) in entries {
            let mut h = tar::Header::new_gnu();
            {
                let raw = h.as_old_mut();
                raw.name = [0; 100];
                raw.name[..path.len()].copy_from_slice(path.as_bytes());
            }
            h.set_entry_type(*kind);
            h.set_size(if *kind == tar::EntryType::Regular {
                data.len() as u64
            } else {
                0
            });
            h.set_mode(0o644);
            if *kind == tar::EntryType::Symlink || *kind == tar::EntryType::Link {
                h.set_link_name("../../etc/passwd").unwrap();
            }
            h.set_cksum();
            let body: &[u8] = if *kind == tar::EntryType::Regular {
                data
            } else {
                &[]
            };
            b.append(&h, body).unwrap();
        }
        b.into_inner().unwrap().finish().unwrap()
    }

    pub(crate) const CHART: &[u8] = b"apiVersion: v2\nname: web\nversion: 1.0.0\n";

    fn reg<'a>(path: &'a str, data: &'static [u8]) -> E<'a> {
        E(path, tar::EntryType::Regular, data)
    }

    fn check(entries: &[E<'_>]) -> Result<ChartMeta, ArchiveViolation> {
        inspect(&tgz(entries), &ArchiveLimits::default(), "web", "1.0.0")
    }

    #[test]
    fn accepts_a_plain_chart() {
        let meta = check(&[
            E("web/", tar::EntryType::Directory, b""),
            reg("web/Chart.yaml", CHART),
            reg("web/values.yaml", b"a: 1\n"),
            reg("web/templates/cm.yaml", b"kind: ConfigMap\n"),
        ])
        .unwrap();
        assert_eq!(meta.name, "web");
        assert_eq!(meta.version, "1.0.0");
    }

    #[test]
    fn refuses_hostile_entries() {
        let cases: Vec<(Vec<E<'_>>, &str, &str)> = vec![
            (
                vec![
                    reg("web/Chart.yaml", CHART),
                    reg("web/../../etc/cron.d/x", b"x"),
                ],
                "web/../../etc/cron.d/x",
                "climbs out",
            ),
            (vec![reg("/etc/passwd", b"x")], "/etc/passwd", "absolute"),
            (
                vec![
                    reg("web/Chart.yaml", CHART),
                    E("web/templates/link", tar::EntryType::Symlink, b""),
                ],
                "web/templates/link",
                "symbolic link",
            ),
            (
                vec![
                    reg("web/Chart.yaml", CHART),
                    E("web/hard", tar::EntryType::Link, b""),
                ],
                "web/hard",
                "hard link",
            ),
            (
                vec![
                    reg("web/Chart.yaml", CHART),
                    E("web/dev", tar::EntryType::Char, b""),
                ],
                "web/dev",
                "device",
            ),
            (
                vec![reg("web/Chart.yaml", CHART), reg("other/x.yaml", b"x")],
                "other/x.yaml",
                "outside the chart's top directory",
            ),
        ];
        for (entries, entry, reason) in cases {
            let e = check(&entries).unwrap_err();
            assert_eq!(e.entry, entry, "{e:?}");
            assert!(e.reason.contains(reason), "{e:?}");
        }
    }

    #[test]
    fn refuses_wrong_name_or_version_and_missing_chart_yaml() {
        let e = check(&[reg("web/values.yaml", b"a: 1")]).unwrap_err();
        assert!(e.reason.contains("no Chart.yaml"), "{e:?}");
        let e = inspect(
            &tgz(&[reg("web/Chart.yaml", CHART)]),
            &ArchiveLimits::default(),
            "api",
            "1.0.0",
        )
        .unwrap_err();
        assert!(e.reason.contains("names the chart \"web\""), "{e:?}");
        let e = inspect(
            &tgz(&[reg("web/Chart.yaml", CHART)]),
            &ArchiveLimits::default(),
            "web",
            "2.0.0",
        )
        .unwrap_err();
        assert!(e.reason.contains("version"), "{e:?}");
    }

    #[test]
    fn bounds_sizes_counts_and_depth() {
        let limits = ArchiveLimits {
            max_uncompressed_bytes: 64 * 1024,
            max_file_bytes: 16 * 1024,
            max_entries: 10,
            max_path_depth: 4,
            ..ArchiveLimits::default()
        };
        // A compressible file bigger than one file may be.
        let big = vec![b'a'; 32 * 1024];
        let bytes = {
            let mut b = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::best()));
            let mut h = tar::Header::new_gnu();
            h.set_size(CHART.len() as u64);
            h.set_cksum();
            b.append_data(&mut h, "web/Chart.yaml", CHART).unwrap();
            let mut h = tar::Header::new_gnu();
            h.set_size(big.len() as u64);
            h.set_cksum();
            b.append_data(&mut h, "web/big.txt", &big[..]).unwrap();
            b.into_inner().unwrap().finish().unwrap()
        };
        let e = inspect(&bytes, &limits, "web", "1.0.0").unwrap_err();
        assert_eq!(e.entry, "web/big.txt");
        assert!(e.reason.contains("per file"), "{e:?}");

        // A gzip bomb: the total decompressed size is bounded whatever the entries say.
        let bomb = {
            let mut b = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::best()));
            let mut h = tar::Header::new_gnu();
            h.set_size(CHART.len() as u64);
            h.set_cksum();
            b.append_data(&mut h, "web/Chart.yaml", CHART).unwrap();
            for i in 0..8 {
                let mut h = tar::Header::new_gnu();
                h.set_size(15 * 1024);
                h.set_cksum();
                b.append_data(&mut h, format!("web/f{i}"), &vec![0u8; 15 * 1024][..])
                    .unwrap();
            }
            b.into_inner().unwrap().finish().unwrap()
        };
        let e = inspect(&bomb, &limits, "web", "1.0.0").unwrap_err();
        assert!(e.reason.contains("decompresses to more than"), "{e:?}");

        let many: Vec<String> = (0..20).map(|i| format!("web/f{i}")).collect();
        let mut entries = vec![reg("web/Chart.yaml", CHART)];
        entries.extend(many.iter().map(|p| reg(p, b"x")));
        let e = inspect(&tgz(&entries), &limits, "web", "1.0.0").unwrap_err();
        assert!(e.reason.contains("limit of 10 entries"), "{e:?}");

        let e = inspect(
            &tgz(&[
                reg("web/Chart.yaml", CHART),
                reg("web/a/b/c/d/e.yaml", b"x"),
            ]),
            &limits,
            "web",
            "1.0.0",
        )
        .unwrap_err();
        assert!(e.reason.contains("deeper than 4"), "{e:?}");

        let e = inspect(
            &vec![0u8; 11 * 1024 * 1024],
            &ArchiveLimits::default(),
            "web",
            "1.0.0",
        )
        .unwrap_err();
        assert!(e.reason.contains("more than the limit"), "{e:?}");
        let e = inspect(
            b"not gzip at all",
            &ArchiveLimits::default(),
            "web",
            "1.0.0",
        )
        .unwrap_err();
        assert!(e.reason.contains("not a readable"), "{e:?}");
    }

    #[test]
    fn reads_one_file() {
        let bytes = tgz(&[
            reg("web/Chart.yaml", CHART),
            reg("web/values.yaml", b"a: 1\n"),
        ]);
        let l = ArchiveLimits::default();
        assert_eq!(
            read_file(&bytes, &l, "values.yaml").unwrap().unwrap(),
            b"a: 1\n"
        );
        assert!(read_file(&bytes, &l, "README.md").unwrap().is_none());
    }

    #[test]
    fn checks_subcharts_too() {
        let sub_bad = tgz(&[
            reg(
                "db/Chart.yaml",
                b"apiVersion: v2\nname: db\nversion: 1.0.0\n",
            ),
            E("db/templates/x", tar::EntryType::Symlink, b""),
        ]);
        let sub_bad: &'static [u8] = Box::leak(sub_bad.into_boxed_slice());
        let e = check(&[
            reg("web/Chart.yaml", CHART),
            reg("web/charts/db-1.0.0.tgz", sub_bad),
        ])
        .unwrap_err();
        assert_eq!(e.entry, "web/charts/db-1.0.0.tgz!db/templates/x");
        assert!(e.reason.contains("symbolic link"), "{e:?}");

        let sub_ok = tgz(&[reg(
            "db/Chart.yaml",
            b"apiVersion: v2\nname: db\nversion: 1.0.0\n",
        )]);
        let sub_ok: &'static [u8] = Box::leak(sub_ok.into_boxed_slice());
        check(&[
            reg("web/Chart.yaml", CHART),
            reg("web/charts/db-1.0.0.tgz", sub_ok),
        ])
        .unwrap();
    }
}
