//! List conventions of the reference API: `pageSize`, `offset`, `orderBy`, `filter`, `kinds`.
//!
//! Parsing is pure and strict: unknown parameters, unknown or forbidden fields and bad values are
//! refused with a message naming them. The store turns a parsed [`ListQuery`] into SQL with every
//! value bound as a parameter, so nothing a user types reaches the SQL text.

use crate::catalog::Kind;

/// Default and largest page size.
pub const DEFAULT_PAGE_SIZE: u32 = 20;
pub const MAX_PAGE_SIZE: u32 = 500;
/// Most `OR` terms in one filter and most terms in one `orderBy`.
pub const MAX_TERMS: usize = 50;

/// The listable catalog entities.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entity {
    Registry,
    Application,
    DeploymentPackage,
    Artifact,
    /// Deployments (`/appdeployment/deployments`); listed from memory, not SQL.
    Deployment,
    /// Edges as the reference's cluster inventory, and the deployments-per-cluster view.
    Cluster,
    /// The edges of one deployment (`/deployments/{id}/clusters`).
    DeploymentCluster,
    /// Canopy's own edge list (`/canopy/v1/projects/{p}/edges`).
    Edge,
}

/// A field that can be filtered or ordered on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Field {
    Name,
    DisplayName,
    Description,
    Version,
    CreateTime,
    UpdateTime,
    ChartName,
    ChartVersion,
    HelmRegistryName,
    ImageRegistryName,
    DefaultProfileName,
    RegistryType,
    MimeType,
    Id,
    AppName,
    AppVersion,
    DeployId,
    Status,
    LastSeen,
    Connection,
}

impl Entity {
    /// Fields of this entity that may appear in `filter` and `orderBy`.
    pub fn fields(self) -> &'static [(&'static str, Field)] {
        use Field::*;
        match self {
            Entity::Application => &[
                ("name", Name),
                ("displayName", DisplayName),
                ("description", Description),
                ("version", Version),
                ("chartName", ChartName),
                ("chartVersion", ChartVersion),
                ("helmRegistryName", HelmRegistryName),
                ("imageRegistryName", ImageRegistryName),
                ("defaultProfileName", DefaultProfileName),
                ("createTime", CreateTime),
                ("updateTime", UpdateTime),
            ],
            Entity::DeploymentPackage => &[
                ("name", Name),
                ("displayName", DisplayName),
                ("description", Description),
                ("version", Version),
                ("createTime", CreateTime),
                ("updateTime", UpdateTime),
            ],
            Entity::Registry => &[
                ("name", Name),
                ("displayName", DisplayName),
                ("description", Description),
                ("type", RegistryType),
                ("createTime", CreateTime),
                ("updateTime", UpdateTime),
            ],
            Entity::Artifact => &[
                ("name", Name),
                ("displayName", DisplayName),
                ("description", Description),
                ("mimeType", MimeType),
                ("createTime", CreateTime),
                ("updateTime", UpdateTime),
            ],
            Entity::Deployment => &[
                ("name", Name),
                ("displayName", DisplayName),
                ("appName", AppName),
                ("appVersion", AppVersion),
                ("deployId", DeployId),
                ("status", Status),
                ("createTime", CreateTime),
            ],
            Entity::Cluster => &[("name", Name), ("id", Id)],
            Entity::DeploymentCluster => &[("name", Name), ("id", Id), ("status", Status)],
            Entity::Edge => &[
                ("name", Name),
                ("id", Id),
                ("createTime", CreateTime),
                ("lastSeen", LastSeen),
                ("connection", Connection),
            ],
        }
    }

    /// Known fields of the entity that are nevertheless refused in filters and ordering.
    fn forbidden(self) -> &'static [&'static str] {
        match self {
            Entity::Registry => &[
                "rootUrl",
                "username",
                "authToken",
                "cacerts",
                "inventoryUrl",
                "apiType",
            ],
            Entity::Application => &["profiles", "ignoredResources", "kind"],
            Entity::DeploymentPackage => &[
                "applicationReferences",
                "profiles",
                "applicationDependencies",
                "extensions",
                "artifacts",
                "defaultNamespaces",
                "namespaces",
                "isDeployed",
                "isVisible",
                "kind",
                "defaultProfileName",
                "forbidsMultipleDeployments",
            ],
            Entity::Artifact => &["artifact"],
            Entity::Deployment => &[
                "overrideValues",
                "targetClusters",
                "allAppTargetClusters",
                "apps",
                "profileName",
                "deploymentType",
            ],
            Entity::Cluster | Entity::DeploymentCluster => &["labels", "apps", "createTime"],
            Entity::Edge => &["labels", "agent"],
        }
    }

    fn field(self, name: &str) -> Result<Field, ListError> {
        if let Some((_, f)) = self.fields().iter().find(|(n, _)| *n == name) {
            return Ok(*f);
        }
        if self.forbidden().contains(&name) {
            return Err(ListError(format!(
                "cannot filter/orderBy on attribute {name:?}"
            )));
        }
        Err(ListError(format!("no such attribute {name:?}")))
    }
}

/// A bad list parameter; the message names it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ListError(pub String);

/// One `field [asc|desc]` term.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderTerm {
    pub field: Field,
    pub descending: bool,
}

/// One `field=value` term: a case-insensitive substring match where `*` matches anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterTerm {
    pub field: Field,
    /// The value as typed (without surrounding quotes).
    pub value: String,
}

impl FilterTerm {
    /// The value as a lowercase SQL `LIKE` pattern with `\` as escape character: `%` and `_`
    /// typed by the user match themselves, `*` matches any run of characters, and the pattern
    /// is wrapped in `%` for substring semantics.
    pub fn like_pattern(&self) -> String {
        let mut out = String::from("%");
        for c in self.value.to_lowercase().chars() {
            match c {
                '*' => out.push('%'),
                '%' | '_' | '\\' => {
                    out.push('\\');
                    out.push(c);
                }
                c => out.push(c),
            }
        }
        out.push('%');
        out
    }

    /// Whether `text` matches this term (the same semantics as the SQL, for in-memory use).
    pub fn matches(&self, text: &str) -> bool {
        let text = text.to_lowercase();
        let value = self.value.to_lowercase();
        let parts: Vec<&str> = value.split('*').collect();
        let mut pos = 0;
        for p in parts {
            match text[pos..].find(p) {
                Some(i) => pos += i + p.len(),
                None => return false,
            }
        }
        true
    }
}

/// A parsed list request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListQuery {
    pub page_size: u32,
    pub offset: u64,
    pub order_by: Vec<OrderTerm>,
    /// Terms OR-ed together; empty means no filter.
    pub filter: Vec<FilterTerm>,
    /// Kinds to include; empty means all.
    pub kinds: Vec<Kind>,
    /// `showSensitiveInfo` (registries only).
    pub show_sensitive_info: bool,
    /// `labels` (deployments, clusters, edges): each `k=v[,k=v]`.
    pub labels: Vec<String>,
}

impl Default for ListQuery {
    fn default() -> Self {
        ListQuery {
            page_size: DEFAULT_PAGE_SIZE,
            offset: 0,
            order_by: Vec::new(),
            filter: Vec::new(),
            kinds: Vec::new(),
            show_sensitive_info: false,
            labels: Vec::new(),
        }
    }
}

/// Most `labels` items in one list request.
pub const MAX_LABEL_FILTERS: usize = 20;

impl ListQuery {
    /// Applies filter, order and page to items held in memory (deployments, edges): `value`
    /// gives an item's text for a field. Filter terms are OR-ed case-insensitive substring
    /// matches; ordering compares the texts (then keeps input order). Returns the page and the
    /// number of items that matched the filter.
    pub fn page_in_memory<T>(
        &self,
        items: Vec<T>,
        value: impl Fn(&T, Field) -> String,
    ) -> (Vec<T>, u64) {
        let mut kept: Vec<T> = if self.filter.is_empty() {
            items
        } else {
            items
                .into_iter()
                .filter(|it| self.filter.iter().any(|t| t.matches(&value(it, t.field))))
                .collect()
        };
        if !self.order_by.is_empty() {
            let mut keyed: Vec<(Vec<String>, T)> = kept
                .into_iter()
                .map(|it| {
                    let keys = self
                        .order_by
                        .iter()
                        .map(|o| value(&it, o.field).to_lowercase())
                        .collect();
                    (keys, it)
                })
                .collect();
            keyed.sort_by(|(a, _), (b, _)| {
                for (i, o) in self.order_by.iter().enumerate() {
                    let c = a[i].cmp(&b[i]);
                    let c = if o.descending { c.reverse() } else { c };
                    if c != std::cmp::Ordering::Equal {
                        return c;
                    }
                }
                std::cmp::Ordering::Equal
            });
            kept = keyed.into_iter().map(|(_, it)| it).collect();
        }
        let total = kept.len() as u64;
        let page = kept
            .into_iter()
            .skip(usize::try_from(self.offset).unwrap_or(usize::MAX))
            .take(self.page_size as usize)
            .collect();
        (page, total)
    }
}

/// Parses an `orderBy` value: comma-separated `field [asc|desc]` terms.
pub fn parse_order_by(entity: Entity, s: &str) -> Result<Vec<OrderTerm>, ListError> {
    let mut out = Vec::new();
    if s.split(',').count() > MAX_TERMS {
        return Err(ListError(format!(
            "invalid order by: at most {MAX_TERMS} terms are allowed"
        )));
    }
    for term in s.split(',') {
        let words: Vec<&str> = term.split_whitespace().collect();
        let (field, descending) = match words.as_slice() {
            [] if s.trim().is_empty() => return Ok(out),
            [f] => (*f, false),
            [f, d] => match d.to_ascii_lowercase().as_str() {
                "asc" => (*f, false),
                "desc" => (*f, true),
                _ => {
                    return Err(ListError(format!(
                        "invalid order by: {term:?}: direction must be asc or desc"
                    )));
                }
            },
            _ => {
                return Err(ListError(format!(
                    "invalid order by: {term:?}: expected \"field [asc|desc]\""
                )));
            }
        };
        out.push(OrderTerm {
            field: entity.field(field)?,
            descending,
        });
    }
    Ok(out)
}

/// Parses a `filter` value: `field=value` terms joined by ` OR `.
pub fn parse_filter(entity: Entity, s: &str) -> Result<Vec<FilterTerm>, ListError> {
    if s.trim().is_empty() {
        return Ok(Vec::new());
    }
    if s.chars().any(char::is_control) {
        return Err(ListError(
            "invalid filter: control characters are not allowed".to_string(),
        ));
    }
    let mut out = Vec::new();
    let terms = split_or(s);
    if terms.len() > MAX_TERMS {
        return Err(ListError(format!(
            "invalid filter: at most {MAX_TERMS} terms are allowed (got {})",
            terms.len()
        )));
    }
    for term in terms {
        let Some((field, value)) = term.split_once('=') else {
            return Err(ListError(format!(
                "invalid filter term {:?}: expected field=value",
                term.trim()
            )));
        };
        let field = field.trim();
        let mut value = value.trim();
        if value.len() >= 2
            && ((value.starts_with('"') && value.ends_with('"'))
                || (value.starts_with('\'') && value.ends_with('\'')))
        {
            value = &value[1..value.len() - 1];
        }
        out.push(FilterTerm {
            field: entity.field(field)?,
            value: value.to_string(),
        });
    }
    Ok(out)
}

/// Splits on the word `OR` surrounded by whitespace (any case).
fn split_or(s: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let lower = s.to_ascii_lowercase();
    let mut start = 0;
    let bytes = lower.as_bytes();
    let mut i = 0;
    while i + 2 <= bytes.len() {
        if &bytes[i..i + 2] == b"or"
            && i > 0
            && bytes[i - 1].is_ascii_whitespace()
            && i + 2 < bytes.len()
            && bytes[i + 2].is_ascii_whitespace()
        {
            parts.push(&s[start..i - 1]);
            start = i + 3;
            i += 3;
            continue;
        }
        i += 1;
    }
    parts.push(&s[start..]);
    parts
}

/// Parses a raw URL query string for a list of `entity`, refusing unknown parameters.
pub fn parse_query(entity: Entity, raw: &str) -> Result<ListQuery, ListError> {
    let mut q = ListQuery::default();
    for (k, v) in form_pairs(raw)? {
        match k.as_str() {
            "pageSize" => {
                let n: i64 = v.trim().parse().map_err(|_| {
                    ListError(format!("invalid pageSize {v:?}: must be a whole number"))
                })?;
                if n < 0 {
                    return Err(ListError(format!(
                        "invalid pageSize {n}: must not be negative"
                    )));
                }
                if n > MAX_PAGE_SIZE as i64 {
                    return Err(ListError(format!(
                        "invalid pageSize {n}: must be at most {MAX_PAGE_SIZE}"
                    )));
                }
                q.page_size = if n == 0 { DEFAULT_PAGE_SIZE } else { n as u32 };
            }
            "offset" => {
                let n: i64 = v.trim().parse().map_err(|_| {
                    ListError(format!("invalid offset {v:?}: must be a whole number"))
                })?;
                if n < 0 {
                    return Err(ListError(format!(
                        "invalid offset {n}: must not be negative"
                    )));
                }
                q.offset = n as u64;
            }
            "orderBy" => q.order_by = parse_order_by(entity, &v)?,
            "filter" => q.filter = parse_filter(entity, &v)?,
            "kinds" if matches!(entity, Entity::Application | Entity::DeploymentPackage) => {
                for part in v.split(',').filter(|p| !p.trim().is_empty()) {
                    let k = Kind::parse(part).ok_or_else(|| ListError(format!("invalid kinds value {part:?}: expected KIND_NORMAL, KIND_EXTENSION or KIND_ADDON")))?;
                    if !q.kinds.contains(&k) {
                        q.kinds.push(k);
                    }
                }
            }
            "showSensitiveInfo" if entity == Entity::Registry => {
                q.show_sensitive_info = parse_bool("showSensitiveInfo", &v)?
            }
            "labels" if matches!(entity, Entity::Deployment | Entity::Cluster | Entity::Edge) => {
                if q.labels.len() >= MAX_LABEL_FILTERS {
                    return Err(ListError(format!(
                        "too many labels filters: at most {MAX_LABEL_FILTERS}"
                    )));
                }
                if !v.trim().is_empty() {
                    q.labels.push(v.trim().to_string());
                }
            }
            other => return Err(ListError(format!("unknown query parameter {other:?}"))),
        }
    }
    Ok(q)
}

/// Parses a boolean query parameter.
pub fn parse_bool(name: &str, v: &str) -> Result<bool, ListError> {
    match v.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(ListError(format!(
            "invalid {name} {v:?}: must be true or false"
        ))),
    }
}

/// Decodes `application/x-www-form-urlencoded` pairs (repeated keys kept in order).
pub fn form_pairs(raw: &str) -> Result<Vec<(String, String)>, ListError> {
    let mut out = Vec::new();
    for pair in raw.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        out.push((percent_decode(k)?, percent_decode(v)?));
    }
    Ok(out)
}

fn percent_decode(s: &str) -> Result<String, ListError> {
    let mut bytes = Vec::with_capacity(s.len());
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => bytes.push(b' '),
            b'%' => {
                let hex = b
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(v) => {
                        bytes.push(v);
                        i += 2;
                    }
                    None => return Err(ListError(format!("invalid percent-encoding in {s:?}"))),
                }
            }
            c => bytes.push(c),
        }
        i += 1;
    }
    String::from_utf8(bytes)
        .map_err(|_| ListError(format!("query parameter {s:?} is not valid UTF-8")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_reference_examples() {
        let q = parse_query(Entity::Application, "filter=name%3Dweb%20OR%20displayName%3D*UI*&orderBy=name%20desc,version&pageSize=5&offset=10&kinds=KIND_NORMAL&kinds=KIND_ADDON").unwrap();
        assert_eq!(q.page_size, 5);
        assert_eq!(q.offset, 10);
        assert_eq!(q.filter.len(), 2);
        assert_eq!(q.filter[1].field, Field::DisplayName);
        assert_eq!(
            q.order_by,
            vec![
                OrderTerm {
                    field: Field::Name,
                    descending: true
                },
                OrderTerm {
                    field: Field::Version,
                    descending: false
                }
            ]
        );
        assert_eq!(q.kinds, vec![Kind::Normal, Kind::Addon]);
    }

    #[test]
    fn refuses_bad_parameters() {
        for raw in [
            "pageSize=-1",
            "pageSize=501",
            "pageSize=abc",
            "offset=-3",
            "orderBy=name%20sideways",
            "orderBy=nope",
            "filter=nope%3Dx",
            "filter=rootUrl%3Dx",
            "filter=justtext",
            "kinds=KIND_WEIRD",
            "bogus=1",
        ] {
            let e = parse_query(Entity::Application, raw).err();
            assert!(e.is_some(), "{raw} should be refused");
        }
        let many = format!("filter={}", vec!["name%3Dx"; 60].join("%20OR%20"));
        assert!(
            parse_query(Entity::Application, &many).is_err(),
            "too many filter terms"
        );
        let e = parse_query(Entity::Registry, "filter=rootUrl%3Dx").unwrap_err();
        assert!(e.0.contains("cannot filter/orderBy"), "{e}");
        let e = parse_query(Entity::Registry, "orderBy=name%20up").unwrap_err();
        assert!(e.0.contains("invalid order by"), "{e}");
    }

    #[test]
    fn like_patterns_escape_sql_wildcards() {
        let t = FilterTerm {
            field: Field::Name,
            value: "A_b%*c".into(),
        };
        assert_eq!(t.like_pattern(), "%a\\_b\\%%c%");
        assert!(t.matches("xxa_b%ZZZc"));
        assert!(!t.matches("axb%c"));
    }

    proptest! {
        #[test]
        fn filter_roundtrip(values in proptest::collection::vec("[a-zA-Z0-9._*'-]{0,12}", 1..5)) {
            let s = values.iter().map(|v| format!("name={v}")).collect::<Vec<_>>().join(" OR ");
            let terms = parse_filter(Entity::Registry, &s).unwrap();
            prop_assert_eq!(terms.len(), values.len());
            for (t, v) in terms.iter().zip(&values) {
                let mut expect = v.trim();
                if expect.len() >= 2 && expect.starts_with('\'') && expect.ends_with('\'') {
                    expect = &expect[1..expect.len() - 1];
                }
                prop_assert_eq!(&t.value, expect);
            }
        }

        #[test]
        fn order_by_roundtrip(terms in proptest::collection::vec((0usize..6, any::<bool>(), any::<bool>()), 1..6)) {
            let fields = Entity::DeploymentPackage.fields();
            let s = terms.iter().map(|(i, desc, explicit)| {
                let (name, _) = fields[*i];
                match (desc, explicit) { (true, _) => format!("{name} desc"), (false, true) => format!("{name} asc"), (false, false) => name.to_string() }
            }).collect::<Vec<_>>().join(", ");
            let parsed = parse_order_by(Entity::DeploymentPackage, &s).unwrap();
            prop_assert_eq!(parsed.len(), terms.len());
            for (p, (i, desc, _)) in parsed.iter().zip(&terms) {
                prop_assert_eq!(p.field, fields[*i].1);
                prop_assert_eq!(p.descending, *desc);
            }
        }

        #[test]
        fn arbitrary_input_never_panics(raw in ".{0,80}") {
            let _ = parse_query(Entity::Application, &raw);
            let _ = parse_filter(Entity::Artifact, &raw);
            let _ = parse_order_by(Entity::Registry, &raw);
        }
    }
}
