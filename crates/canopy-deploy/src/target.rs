//! Which edges run which applications of a deployment.
//!
//! An auto-scaling deployment targets each application at one or more *label sets*: an edge
//! matches a set when it carries every label of it (AND within a set), and runs the application
//! when it matches any of its sets (OR across sets) — the reference's Fleet `clusterSelector`
//! semantics, so current and future edges with those labels are picked up. A targeted deployment
//! names edges instead (`clusterId`: an edge's id or its name).
//!
//! [`targeting`] turns a normalized request into a [`Targeting`] (per application, with
//! `allAppTargetClusters` merged in); the server stores it and asks it which applications an
//! edge must run ([`Targeting::apps_for_edge`]).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::error::DeployError;
use crate::model::{Deployment, TARGETED, TargetClusters};
use crate::validate::parse_label_filters;

/// The label a targeted target carries in the reference's responses (and that the list
/// `labels` filter matches for targeted deployments): the edge id.
pub const CLUSTER_NAME_LABEL: &str = "edge-orchestrator.intel.com/clustername";

/// Where each application of a deployment runs (application name → target).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Targeting {
    pub apps: BTreeMap<String, AppTarget>,
}

/// The target of one application.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum AppTarget {
    /// Auto-scaling: edges matching any of these label sets (each set: all of its labels).
    Labels(Vec<BTreeMap<String, String>>),
    /// Targeted: these edges, by id or name.
    Edges(Vec<String>),
}

impl AppTarget {
    fn push_labels(sets: &mut Vec<BTreeMap<String, String>>, set: BTreeMap<String, String>) {
        if !sets.contains(&set) {
            sets.push(set);
        }
    }

    fn push_edge(edges: &mut Vec<String>, edge: &str) {
        if !edges.iter().any(|e| e == edge) {
            edges.push(edge.to_string());
        }
    }
}

/// True when `labels` (an edge's) carry every label of `set`. An empty set matches no edge:
/// requests cannot produce one ([`crate::validate::normalize_request`] requires labels), and a
/// stored one must not silently mean "every edge of the project".
pub fn set_matches(set: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    !set.is_empty() && set.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// Per-application targets of a normalized request (see
/// [`crate::validate::normalize_request`]) for a package whose applications are `app_names`.
///
/// - Each `targetClusters` entry adds its label set (auto-scaling) or edge (targeted) to its
///   application (duplicates dropped); an `appName` that is not in the package is an error.
/// - `allAppTargetClusters` (section 6 step 7): with no per-application targets, every
///   application gets it; otherwise its labels are added to each label set of every application
///   where the key is absent (targeted: its edge is added to each application's edges), and an
///   application without targets of its own gets it as its only target.
/// - An application left without any target is an error ("application X has no target
///   clusters").
pub fn targeting(d: &Deployment, app_names: &[String]) -> Result<Targeting, DeployError> {
    let targeted = d.deployment_type == TARGETED;
    let known: BTreeSet<&str> = app_names.iter().map(String::as_str).collect();
    let mut apps: BTreeMap<String, AppTarget> = BTreeMap::new();
    let empty = || {
        if targeted {
            AppTarget::Edges(Vec::new())
        } else {
            AppTarget::Labels(Vec::new())
        }
    };

    for (i, t) in d.target_clusters.iter().enumerate() {
        if !known.contains(t.app_name.as_str()) {
            return Err(DeployError::invalid(format!(
                "targetClusters[{i}].appName: application {} is not part of deployment package \
                 {}:{} (its applications: {})",
                t.app_name,
                d.app_name,
                d.app_version,
                join(app_names.iter().map(String::as_str))
            )));
        }
        let entry = apps.entry(t.app_name.clone()).or_insert_with(empty);
        add_target(entry, t);
    }

    if let Some(all) = &d.all_app_target_clusters {
        for name in app_names {
            match apps.get_mut(name) {
                None => {
                    let mut target = empty();
                    add_target(&mut target, all);
                    apps.insert(name.clone(), target);
                }
                Some(AppTarget::Labels(sets)) => {
                    let mut merged = Vec::with_capacity(sets.len());
                    for set in sets.drain(..) {
                        let mut set = set;
                        for (k, v) in &all.labels {
                            set.entry(k.clone()).or_insert_with(|| v.clone());
                        }
                        AppTarget::push_labels(&mut merged, set);
                    }
                    *sets = merged;
                }
                Some(AppTarget::Edges(edges)) => {
                    if !all.cluster_id.is_empty() {
                        AppTarget::push_edge(edges, &all.cluster_id);
                    }
                }
            }
        }
    }

    let missing: Vec<&str> = app_names
        .iter()
        .map(String::as_str)
        .filter(|n| apps.get(*n).is_none_or(AppTarget::is_empty))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    match missing.as_slice() {
        [] => Ok(Targeting { apps }),
        [one] => Err(DeployError::invalid(format!(
            "application {one} has no target clusters: add a targetClusters entry for it or use \
             allAppTargetClusters"
        ))),
        many => Err(DeployError::invalid(format!(
            "applications {} have no target clusters: add targetClusters entries for them or use \
             allAppTargetClusters",
            join(many.iter().copied())
        ))),
    }
}

fn add_target(target: &mut AppTarget, t: &TargetClusters) {
    match target {
        AppTarget::Labels(sets) => {
            if !t.labels.is_empty() {
                AppTarget::push_labels(sets, t.labels.clone());
            }
        }
        AppTarget::Edges(edges) => {
            if !t.cluster_id.is_empty() {
                AppTarget::push_edge(edges, &t.cluster_id);
            }
        }
    }
}

fn join<'a>(items: impl Iterator<Item = &'a str>) -> String {
    items.collect::<Vec<_>>().join(", ")
}

impl AppTarget {
    fn is_empty(&self) -> bool {
        match self {
            AppTarget::Labels(sets) => sets.is_empty(),
            AppTarget::Edges(edges) => edges.is_empty(),
        }
    }

    /// True when an edge with this id, name and labels runs the application.
    pub fn matches(
        &self,
        edge_id: &str,
        edge_name: &str,
        labels: &BTreeMap<String, String>,
    ) -> bool {
        match self {
            AppTarget::Labels(sets) => sets.iter().any(|s| set_matches(s, labels)),
            AppTarget::Edges(edges) => edges
                .iter()
                .any(|e| e == edge_id || (!edge_name.is_empty() && e == edge_name)),
        }
    }
}

impl Targeting {
    /// The applications (names, sorted) that an edge with this id, name and labels runs: those
    /// with a label set the edge's labels satisfy (auto-scaling), or naming the edge by id or
    /// name (targeted).
    pub fn apps_for_edge(
        &self,
        edge_id: &str,
        edge_name: &str,
        labels: &BTreeMap<String, String>,
    ) -> Vec<String> {
        self.apps
            .iter()
            .filter(|(_, t)| t.matches(edge_id, edge_name, labels))
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// Every distinct label set across applications (for a label-index lookup of candidate
    /// edges), in first-seen order by application name.
    pub fn label_sets(&self) -> Vec<&BTreeMap<String, String>> {
        let mut out: Vec<&BTreeMap<String, String>> = Vec::new();
        for t in self.apps.values() {
            if let AppTarget::Labels(sets) = t {
                for s in sets {
                    if !out.contains(&s) {
                        out.push(s);
                    }
                }
            }
        }
        out
    }

    /// Every distinct edge reference (id or name) of targeted applications.
    pub fn edge_refs(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for t in self.apps.values() {
            if let AppTarget::Edges(edges) = t {
                for e in edges {
                    if !out.contains(&e.as_str()) {
                        out.push(e);
                    }
                }
            }
        }
        out
    }

    /// True when the applications are targeted at named edges (a targeted deployment).
    pub fn is_targeted(&self) -> bool {
        self.apps.values().any(|t| matches!(t, AppTarget::Edges(_)))
    }

    /// The targets as explicit per-application `targetClusters` entries (one per label set or
    /// edge): what a GET shows, and what a client sends back on PUT.
    pub fn to_target_clusters(&self) -> Vec<TargetClusters> {
        let mut out = Vec::new();
        for (app, t) in &self.apps {
            match t {
                AppTarget::Labels(sets) => out.extend(sets.iter().map(|s| TargetClusters {
                    app_name: app.clone(),
                    cluster_id: String::new(),
                    labels: s.clone(),
                })),
                AppTarget::Edges(edges) => out.extend(edges.iter().map(|e| TargetClusters {
                    app_name: app.clone(),
                    cluster_id: e.clone(),
                    labels: BTreeMap::new(),
                })),
            }
        }
        out
    }
}

/// The targets after an update (section 6, "Update"): the new targeting decides which
/// applications there are (an upgrade may add or drop some); for an application targeted by
/// labels before and after, the existing label sets are kept and the new distinct sets are
/// appended (auto-scaling accumulates: labels can only be added, so edges that ran the
/// application keep running it); anything targeted (before or after) takes the new edges
/// (targeted replaces).
///
/// Why on [`Targeting`] rather than on the request: accumulation is per application after
/// `allAppTargetClusters` has been merged, which needs the package's application names; the
/// server stores the result and can show it with [`Targeting::to_target_clusters`].
pub fn update_targets(old: &Targeting, new: &Targeting) -> Targeting {
    let apps = new
        .apps
        .iter()
        .map(|(name, t)| {
            let merged = match (old.apps.get(name), t) {
                (Some(AppTarget::Labels(before)), AppTarget::Labels(after)) => {
                    let mut sets = before.clone();
                    for s in after {
                        AppTarget::push_labels(&mut sets, s.clone());
                    }
                    AppTarget::Labels(sets)
                }
                _ => t.clone(),
            };
            (name.clone(), merged)
        })
        .collect();
    Targeting { apps }
}

/// The list query's `labels` filter (at most 20 items, each `k=v[,k=v]`): true when any label
/// set of any application contains any of the given pairs (OR semantics), or when there is no
/// filter. A targeted application's edge counts as the label
/// [`CLUSTER_NAME_LABEL`]`=<edge>`, as in the reference's responses.
pub fn labels_filter_matches(d: &Targeting, filters: &[String]) -> Result<bool, DeployError> {
    let pairs = parse_label_filters(filters)?;
    if pairs.is_empty() {
        return Ok(true);
    }
    let hit = |k: &str, v: &str| pairs.contains(&(k.to_string(), v.to_string()));
    Ok(d.apps.values().any(|t| match t {
        AppTarget::Labels(sets) => sets.iter().any(|s| s.iter().any(|(k, v)| hit(k, v))),
        AppTarget::Edges(edges) => edges.iter().any(|e| hit(CLUSTER_NAME_LABEL, e)),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;
    use crate::model::AUTO_SCALING;
    use proptest::prelude::*;

    fn l(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn tc(app: &str, labels: &[(&str, &str)]) -> TargetClusters {
        TargetClusters {
            app_name: app.into(),
            cluster_id: String::new(),
            labels: l(labels),
        }
    }

    fn edge(app: &str, id: &str) -> TargetClusters {
        TargetClusters {
            app_name: app.into(),
            cluster_id: id.into(),
            labels: BTreeMap::new(),
        }
    }

    fn dep(targets: Vec<TargetClusters>, all: Option<TargetClusters>) -> Deployment {
        Deployment {
            app_name: "pkg".into(),
            app_version: "1.0".into(),
            deployment_type: AUTO_SCALING.into(),
            target_clusters: targets,
            all_app_target_clusters: all,
            ..Default::default()
        }
    }

    #[test]
    fn and_within_or_across() {
        let d = dep(
            vec![
                tc("web", &[("site", "a"), ("tier", "edge")]),
                tc("web", &[("site", "b")]),
                tc("db", &[("site", "a")]),
            ],
            None,
        );
        let t = targeting(&d, &names(&["web", "db"])).unwrap();
        assert_eq!(
            t.apps_for_edge("e1", "n1", &l(&[("site", "a"), ("tier", "edge")])),
            names(&["db", "web"])
        );
        assert_eq!(
            t.apps_for_edge("e1", "n1", &l(&[("site", "a")])),
            names(&["db"]),
            "AND within a set"
        );
        assert_eq!(
            t.apps_for_edge("e1", "n1", &l(&[("site", "b"), ("x", "y")])),
            names(&["web"]),
            "OR across sets"
        );
        assert!(t.apps_for_edge("e1", "n1", &l(&[])).is_empty());
        assert_eq!(
            t.label_sets(),
            vec![
                &l(&[("site", "a")]),
                &l(&[("site", "a"), ("tier", "edge")]),
                &l(&[("site", "b")])
            ]
        );
        assert!(!t.is_targeted());
        assert!(t.edge_refs().is_empty());
    }

    #[test]
    fn empty_set_matches_nothing() {
        assert!(!set_matches(&l(&[]), &l(&[("a", "b")])));
        assert!(set_matches(
            &l(&[("a", "b")]),
            &l(&[("a", "b"), ("c", "d")])
        ));
        assert!(!set_matches(&l(&[("a", "b")]), &l(&[("a", "c")])));
    }

    #[test]
    fn duplicates_dropped() {
        let d = dep(
            vec![tc("web", &[("site", "a")]), tc("web", &[("site", "a")])],
            None,
        );
        let t = targeting(&d, &names(&["web"])).unwrap();
        assert_eq!(t.apps["web"], AppTarget::Labels(vec![l(&[("site", "a")])]));
    }

    #[test]
    fn unknown_and_untargeted_apps() {
        let d = dep(vec![tc("nope", &[("a", "b")])], None);
        let e = targeting(&d, &names(&["web"])).unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidArgument);
        assert!(
            e.message.starts_with(
                "targetClusters[0].appName: application nope is not part of deployment package pkg:1.0"
            ),
            "{e}"
        );
        let d = dep(vec![tc("web", &[("a", "b")])], None);
        let e = targeting(&d, &names(&["web", "db"])).unwrap_err();
        assert!(
            e.message
                .starts_with("application db has no target clusters"),
            "{e}"
        );
        let e = targeting(&d, &names(&["web", "db", "cache"])).unwrap_err();
        assert!(
            e.message
                .starts_with("applications cache, db have no target clusters"),
            "{e}"
        );
    }

    #[test]
    fn all_apps_alone() {
        let d = dep(vec![], Some(tc("", &[("site", "a")])));
        let t = targeting(&d, &names(&["web", "db"])).unwrap();
        assert_eq!(t.apps.len(), 2);
        assert_eq!(t.apps["db"], AppTarget::Labels(vec![l(&[("site", "a")])]));
    }

    #[test]
    fn all_apps_merged_where_key_absent() {
        let d = dep(
            vec![tc("web", &[("site", "b")]), tc("web", &[("tier", "edge")])],
            Some(tc("", &[("site", "a"), ("env", "prod")])),
        );
        let t = targeting(&d, &names(&["web", "db"])).unwrap();
        assert_eq!(
            t.apps["web"],
            AppTarget::Labels(vec![
                l(&[("site", "b"), ("env", "prod")]),
                l(&[("tier", "edge"), ("site", "a"), ("env", "prod")]),
            ])
        );
        // db had no targets of its own: it gets the all-apps set.
        assert_eq!(
            t.apps["db"],
            AppTarget::Labels(vec![l(&[("site", "a"), ("env", "prod")])])
        );
    }

    #[test]
    fn targeted() {
        let mut d = dep(
            vec![
                edge("web", "edge-1"),
                edge("web", "edge-2"),
                edge("db", "edge-1"),
            ],
            Some(edge("", "edge-3")),
        );
        d.deployment_type = TARGETED.into();
        let t = targeting(&d, &names(&["web", "db"])).unwrap();
        assert!(t.is_targeted());
        assert_eq!(
            t.apps["web"],
            AppTarget::Edges(names(&["edge-1", "edge-2", "edge-3"]))
        );
        assert_eq!(t.edge_refs(), vec!["edge-1", "edge-3", "edge-2"]);
        assert!(t.label_sets().is_empty());
        assert_eq!(
            t.apps_for_edge("edge-1", "x", &l(&[])),
            names(&["db", "web"])
        );
        assert_eq!(
            t.apps_for_edge("id-9", "edge-2", &l(&[])),
            names(&["web"]),
            "by name"
        );
        assert!(t.apps_for_edge("id-9", "", &l(&[])).is_empty());
        assert_eq!(t.to_target_clusters().len(), 5);
    }

    #[test]
    fn update_accumulates_labels_and_replaces_edges() {
        let old = targeting(
            &dep(
                vec![tc("web", &[("site", "a")]), tc("db", &[("site", "a")])],
                None,
            ),
            &names(&["web", "db"]),
        )
        .unwrap();
        let new = targeting(
            &dep(
                vec![
                    tc("web", &[("site", "b")]),
                    tc("web", &[("site", "a")]),
                    tc("cache", &[("x", "y")]),
                ],
                None,
            ),
            &names(&["web", "cache"]),
        )
        .unwrap();
        let u = update_targets(&old, &new);
        assert_eq!(
            u.apps["web"],
            AppTarget::Labels(vec![l(&[("site", "a")]), l(&[("site", "b")])])
        );
        assert_eq!(u.apps["cache"], AppTarget::Labels(vec![l(&[("x", "y")])]));
        assert!(!u.apps.contains_key("db"), "dropped from the package");

        let mut d = dep(vec![edge("web", "e2")], None);
        d.deployment_type = TARGETED.into();
        let old_t = targeting(
            &{
                let mut d = dep(vec![edge("web", "e1")], None);
                d.deployment_type = TARGETED.into();
                d
            },
            &names(&["web"]),
        )
        .unwrap();
        let new_t = targeting(&d, &names(&["web"])).unwrap();
        assert_eq!(
            update_targets(&old_t, &new_t).apps["web"],
            AppTarget::Edges(names(&["e2"]))
        );
        // Type change: the new targets replace the old ones.
        let labels_t =
            targeting(&dep(vec![tc("web", &[("a", "b")])], None), &names(&["web"])).unwrap();
        assert_eq!(update_targets(&old_t, &labels_t), labels_t);
        assert_eq!(update_targets(&labels_t, &new_t), new_t);
    }

    #[test]
    fn label_filter() {
        let t = targeting(
            &dep(
                vec![
                    tc("web", &[("site", "a"), ("env", "prod")]),
                    tc("db", &[("site", "b")]),
                ],
                None,
            ),
            &names(&["web", "db"]),
        )
        .unwrap();
        let f = |v: &[&str]| names(v);
        assert!(labels_filter_matches(&t, &[]).unwrap());
        assert!(labels_filter_matches(&t, &f(&["site=b"])).unwrap());
        assert!(labels_filter_matches(&t, &f(&["x=y,env=prod"])).unwrap());
        assert!(labels_filter_matches(&t, &f(&["x=y", "site=a"])).unwrap());
        assert!(!labels_filter_matches(&t, &f(&["site=c"])).unwrap());
        assert!(labels_filter_matches(&t, &f(&["bad"])).is_err());
        let mut d = dep(vec![edge("web", "e1")], None);
        d.deployment_type = TARGETED.into();
        let t = targeting(&d, &names(&["web"])).unwrap();
        assert!(labels_filter_matches(&t, &f(&[&format!("{CLUSTER_NAME_LABEL}=e1")])).unwrap());
        assert!(!labels_filter_matches(&t, &f(&["site=a"])).unwrap());
    }

    #[test]
    fn serde_round_trip() {
        let t = targeting(&dep(vec![tc("web", &[("a", "b")])], None), &names(&["web"])).unwrap();
        let text = serde_json::to_string(&t).unwrap();
        assert_eq!(serde_json::from_str::<Targeting>(&text).unwrap(), t);
    }

    fn label_map() -> impl Strategy<Value = BTreeMap<String, String>> {
        prop::collection::btree_map("[abc]", "[xy]", 0..3)
    }

    proptest! {
        /// Matching is AND within a set and OR across sets, whatever the sets and labels.
        #[test]
        fn matching_is_and_or(sets in prop::collection::vec(label_map(), 1..4), edge in label_map()) {
            let targets: Vec<TargetClusters> = sets
                .iter()
                .filter(|s| !s.is_empty())
                .map(|s| TargetClusters { app_name: "web".into(), cluster_id: String::new(), labels: s.clone() })
                .collect();
            prop_assume!(!targets.is_empty());
            let t = targeting(&dep(targets, None), &names(&["web"])).unwrap();
            let expected = sets.iter().any(|s| !s.is_empty() && s.iter().all(|(k, v)| edge.get(k) == Some(v)));
            prop_assert_eq!(!t.apps_for_edge("e", "n", &edge).is_empty(), expected);
        }

        /// An update never loses an edge that matched before (auto-scaling accumulates).
        #[test]
        fn update_only_adds(old in prop::collection::vec(label_map(), 1..3), new in prop::collection::vec(label_map(), 1..3), edge in label_map()) {
            let mk = |sets: &Vec<BTreeMap<String, String>>| {
                let targets: Vec<TargetClusters> = sets.iter().filter(|s| !s.is_empty())
                    .map(|s| TargetClusters { app_name: "web".into(), cluster_id: String::new(), labels: s.clone() })
                    .collect();
                targeting(&dep(targets, None), &names(&["web"])).ok()
            };
            let (Some(o), Some(n)) = (mk(&old), mk(&new)) else { return Ok(()); };
            let u = update_targets(&o, &n);
            let before = !o.apps_for_edge("e", "n", &edge).is_empty() || !n.apps_for_edge("e", "n", &edge).is_empty();
            prop_assert_eq!(!u.apps_for_edge("e", "n", &edge).is_empty(), before);
        }
    }
}
