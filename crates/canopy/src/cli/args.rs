//! Shared argument types and the parsers of compound flag values (`app=ns`, `name:version`,
//! `name=type:display:default`). They run inside clap, so a malformed value is a usage error
//! (exit 2) that names the flag, before anything is sent to the server.

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use canopy_client::ListParams;
use canopy_core::catalog::{DeploymentRequirement, Kind, ParameterTemplate};
use clap::{Args, ValueEnum};
use tokio::io::AsyncReadExt as _;

/// Paging and query flags of every server-side list.
#[derive(Debug, Clone, Default, Args)]
pub struct ListArgs {
    /// Filter: `field=value` terms joined by ` OR ` (substring match, `*` wildcard).
    #[arg(long, value_name = "EXPR")]
    pub filter: Option<String>,
    /// Order: comma list of `field [asc|desc]`.
    #[arg(long, value_name = "FIELDS")]
    pub order_by: Option<String>,
    /// Items per page (server default 20, max 500).
    #[arg(long, value_name = "N")]
    pub page_size: Option<u32>,
    /// Index of the first item to show.
    #[arg(long, value_name = "N")]
    pub offset: Option<u32>,
    /// Fetch every page instead of one.
    #[arg(long)]
    pub all: bool,
}

impl ListArgs {
    pub fn params(&self, kinds: &[KindArg]) -> ListParams {
        ListParams {
            page_size: self.page_size,
            offset: self.offset,
            order_by: self.order_by.clone(),
            filter: self.filter.clone(),
            kinds: kinds.iter().map(|k| Kind::from(*k)).collect(),
            labels: Vec::new(),
        }
    }
}

/// Kind of an application or package, as typed on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KindArg {
    Normal,
    Extension,
    Addon,
}

impl From<KindArg> for Kind {
    fn from(k: KindArg) -> Kind {
        match k {
            KindArg::Normal => Kind::Normal,
            KindArg::Extension => Kind::Extension,
            KindArg::Addon => Kind::Addon,
        }
    }
}

/// Registry type, as typed on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "lower")]
pub enum RegistryType {
    /// Helm charts.
    Helm,
    /// Container images.
    Image,
}

impl RegistryType {
    pub fn as_api(self) -> &'static str {
        match self {
            RegistryType::Helm => "HELM",
            RegistryType::Image => "IMAGE",
        }
    }
}

/// `KEY=VALUE`, read by the rules of [`canopy_core::kv`] (split at the first `=`, both sides
/// trimmed, neither empty), as every other `key=value` of Canopy is.
pub fn key_value(s: &str) -> Result<(String, String), String> {
    canopy_core::kv::parse_pair(s).map_err(|e| e.to_string())
}

/// A label `KEY=VALUE`: [`key_value`], then the reference's label rule on both sides (so a
/// label the server would refuse is refused here, naming the flag).
pub fn label(s: &str) -> Result<(String, String), String> {
    canopy_core::kv::parse_label(s).map_err(|e| e.to_string())
}

/// `name:version`, as in `--app web:0.1.0`.
pub fn name_version(s: &str) -> Result<(String, String), String> {
    match s.split_once(':') {
        Some((n, v)) if !n.trim().is_empty() && !v.trim().is_empty() => {
            Ok((n.trim().to_owned(), v.trim().to_owned()))
        }
        _ => Err(format!("expected NAME:VERSION, got {s:?}")),
    }
}

/// `name=type[:display-name[:default]]`, as in `--parameter-template image.tag=string:Tag:1.0`.
/// The default is everything after the second `:`, so it may itself contain `:`.
pub fn parameter_template(s: &str) -> Result<ParameterTemplate, String> {
    let (name, rest) = s
        .split_once('=')
        .ok_or_else(|| format!("expected NAME=TYPE[:DISPLAY-NAME[:DEFAULT]], got {s:?}"))?;
    let mut parts = rest.splitn(3, ':');
    let param_type = parts.next().unwrap_or("").trim();
    if name.trim().is_empty() {
        return Err(format!("parameter template {s:?} has no name"));
    }
    if !matches!(param_type, "string" | "number" | "boolean") {
        return Err(format!(
            "parameter template {name:?} has type {param_type:?}; expected string, number or boolean"
        ));
    }
    Ok(ParameterTemplate {
        name: name.trim().to_owned(),
        param_type: param_type.to_owned(),
        display_name: parts.next().unwrap_or("").to_owned(),
        default: parts.next().unwrap_or("").to_owned(),
        ..Default::default()
    })
}

/// `package:version[:deployment-profile]`.
pub fn deployment_requirement(s: &str) -> Result<DeploymentRequirement, String> {
    let parts: Vec<&str> = s.splitn(3, ':').map(str::trim).collect();
    match parts.as_slice() {
        [name, version, rest @ ..] if !name.is_empty() && !version.is_empty() => {
            Ok(DeploymentRequirement {
                name: (*name).to_owned(),
                version: (*version).to_owned(),
                deployment_profile_name: rest.first().copied().unwrap_or("").to_owned(),
            })
        }
        _ => Err(format!(
            "expected PACKAGE:VERSION[:DEPLOYMENT-PROFILE], got {s:?}"
        )),
    }
}

/// A duration as `90s`, `10m`, `24h`, `7d`, `2w`, a sum of those (`1h30m`, `1h 30m`), or bare
/// seconds (`3600`): whole seconds, more than 0. Read by `humantime` (its units: s, m, h, d, w,
/// M = 30.44 days, y = 365.25 days, and their long names).
pub fn duration(s: &str) -> Result<Duration, String> {
    let bad = |why: &dyn std::fmt::Display| {
        format!("expected a duration such as 90s, 10m, 24h or 7d, got {s:?} ({why})")
    };
    let text = s.trim();
    let d = match text.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) if text.is_empty() => return Err(bad(&"it is empty")),
        Err(_) => humantime::parse_duration(text).map_err(|e| bad(&e))?,
    };
    if d.subsec_nanos() != 0 {
        return Err(bad(&"durations are whole seconds"));
    }
    if d.is_zero() {
        return Err(format!("duration {s:?} must be more than 0"));
    }
    Ok(d)
}

/// A duration as people write it: `45s`, `10m`, `1h30m`, `7d`.
pub fn human_duration(d: Duration) -> String {
    let mut secs = d.as_secs();
    if secs == 0 {
        return "0s".to_owned();
    }
    let mut out = String::new();
    for (unit, size) in [("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)] {
        if secs >= size {
            out.push_str(&format!("{}{unit}", secs / size));
            secs %= size;
        }
    }
    out
}

/// Reads a file, or standard input for `-`.
pub async fn read_input(path: &Path) -> anyhow::Result<Vec<u8>> {
    if path.as_os_str() == "-" {
        let mut buf = Vec::new();
        tokio::io::stdin()
            .read_to_end(&mut buf)
            .await
            .context("cannot read standard input")?;
        return Ok(buf);
    }
    tokio::fs::read(path)
        .await
        .with_context(|| format!("cannot read {}", path.display()))
}

/// Reads a text file (or standard input for `-`) that must be UTF-8.
pub async fn read_text(path: &Path) -> anyhow::Result<String> {
    let bytes = read_input(path).await?;
    String::from_utf8(bytes).with_context(|| format!("{} is not UTF-8 text", path.display()))
}

/// True for the `-` that means standard input or output.
pub fn is_stdio(path: &Path) -> bool {
    path.as_os_str() == "-"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_key_value_pairs() {
        assert_eq!(key_value("web=ns1"), Ok(("web".into(), "ns1".into())));
        assert_eq!(key_value(" web = ns1 "), Ok(("web".into(), "ns1".into())));
        assert_eq!(key_value("a=b=c"), Ok(("a".into(), "b=c".into())));
        for bad in ["web", "=ns", "web="] {
            let e = key_value(bad).unwrap_err();
            assert!(e.contains("is not KEY=VALUE"), "{bad}: {e}");
        }
        assert_eq!(label("site=paris"), Ok(("site".into(), "paris".into())));
        let e = label("site=Paris").unwrap_err();
        assert!(e.contains("label value \"Paris\""), "{e}");
    }

    #[test]
    fn parses_name_version() {
        assert_eq!(
            name_version("web:0.1.0"),
            Ok(("web".into(), "0.1.0".into()))
        );
        assert!(name_version("web").is_err());
        assert!(name_version("web:").is_err());
        assert!(name_version(":1").is_err());
    }

    #[test]
    fn parses_parameter_templates() {
        let p = parameter_template("image.tag=string").unwrap();
        assert_eq!(
            (p.name.as_str(), p.param_type.as_str()),
            ("image.tag", "string")
        );
        assert_eq!((p.display_name.as_str(), p.default.as_str()), ("", ""));
        let p = parameter_template("svc.url=string:Service URL:http://x:80/y").unwrap();
        assert_eq!(p.display_name, "Service URL");
        assert_eq!(p.default, "http://x:80/y");
        let p = parameter_template("replicas=number::3").unwrap();
        assert_eq!((p.display_name.as_str(), p.default.as_str()), ("", "3"));
        assert!(parameter_template("replicas").is_err());
        assert!(parameter_template("=string").is_err());
        let e = parameter_template("replicas=int").unwrap_err();
        assert!(e.contains("expected string, number or boolean"), "{e}");
    }

    #[test]
    fn parses_deployment_requirements() {
        let r = deployment_requirement("base:1.0").unwrap();
        assert_eq!((r.name.as_str(), r.version.as_str()), ("base", "1.0"));
        assert_eq!(r.deployment_profile_name, "");
        let r = deployment_requirement("base:1.0:minimal").unwrap();
        assert_eq!(r.deployment_profile_name, "minimal");
        assert!(deployment_requirement("base").is_err());
    }

    #[test]
    fn parses_durations() {
        assert_eq!(duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(duration("3600s"), Ok(Duration::from_secs(3600)));
        assert_eq!(duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(duration("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(duration("90d"), Ok(Duration::from_secs(90 * 86_400)));
        assert_eq!(duration("2w"), Ok(Duration::from_secs(14 * 86_400)));
        assert_eq!(duration(" 1h30m "), Ok(Duration::from_secs(5400)));
        assert_eq!(duration("1h 30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(duration("1.5h"), Ok(Duration::from_secs(5400)));
        for bad in [
            "",
            "h",
            "10x",
            "10m5",
            "-1s",
            "1.5s",
            "500ms",
            "99999999999999999999d",
        ] {
            let e = duration(bad).unwrap_err();
            assert!(e.starts_with("expected a duration"), "{bad}: {e}");
        }
        assert!(duration("1.5s").unwrap_err().contains("whole seconds"));
        assert!(duration("0s").unwrap_err().contains("must be more than 0"));
        assert!(duration("0").unwrap_err().contains("must be more than 0"));
        assert_eq!(human_duration(Duration::from_secs(5400)), "1h30m");
        assert_eq!(human_duration(Duration::from_secs(600)), "10m");
        assert_eq!(human_duration(Duration::from_secs(86_401)), "1d1s");
        assert_eq!(human_duration(Duration::ZERO), "0s");
    }

    #[test]
    fn list_args_become_params() {
        let a = ListArgs {
            filter: Some("name=web".into()),
            page_size: Some(5),
            ..Default::default()
        };
        let p = a.params(&[KindArg::Addon]);
        assert_eq!(p.filter.as_deref(), Some("name=web"));
        assert_eq!(p.page_size, Some(5));
        assert_eq!(p.kinds, vec![Kind::Addon]);
    }
}
