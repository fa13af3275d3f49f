//! Start order of a deployment's apps from `depends_on`: dependencies first, so one pass can
//! see a dependency's state before it decides about the apps that wait for it.

use std::collections::{BTreeMap, BTreeSet};

use canopy_proto::AppInstance;

/// Indexes into `apps`, dependencies before dependents, each with the reason it can never start
/// (a dependency that is not in the deployment, or a cycle); such apps come last.
pub fn order(apps: &[AppInstance]) -> Vec<(usize, Option<String>)> {
    let index: BTreeMap<&str, usize> = apps
        .iter()
        .enumerate()
        .map(|(i, a)| (a.name.as_str(), i))
        .collect();
    let mut problems: BTreeMap<usize, String> = BTreeMap::new();
    for (i, app) in apps.iter().enumerate() {
        let unknown: Vec<&str> = app
            .depends_on
            .iter()
            .map(String::as_str)
            .filter(|d| !index.contains_key(d))
            .collect();
        if !unknown.is_empty() {
            problems.insert(
                i,
                format!(
                    "depends on {}, which {} not part of this deployment",
                    unknown.join(", "),
                    if unknown.len() == 1 { "is" } else { "are" }
                ),
            );
        }
    }
    // Kahn's algorithm over the known dependencies, in name order for a stable result.
    let deps_of = |i: usize| -> BTreeSet<usize> {
        apps[i]
            .depends_on
            .iter()
            .filter_map(|d| index.get(d.as_str()).copied())
            .collect()
    };
    let mut done: BTreeSet<usize> = BTreeSet::new();
    let mut out = Vec::with_capacity(apps.len());
    loop {
        let ready: Vec<usize> = index
            .values()
            .copied()
            .filter(|i| !done.contains(i) && deps_of(*i).is_subset(&done))
            .collect();
        if ready.is_empty() {
            break;
        }
        for i in ready {
            done.insert(i);
            out.push((i, problems.remove(&i)));
        }
    }
    let stuck: Vec<usize> = index
        .values()
        .copied()
        .filter(|i| !done.contains(i))
        .collect();
    let names: Vec<&str> = stuck.iter().map(|i| apps[*i].name.as_str()).collect();
    for i in stuck {
        let cycle = format!(
            "is in or behind a dependency cycle among {}",
            names.join(", ")
        );
        let why = match problems.remove(&i) {
            Some(p) => format!("{p}; {cycle}"),
            None => cycle,
        };
        out.push((i, Some(why)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(name: &str, deps: &[&str]) -> AppInstance {
        AppInstance {
            name: name.into(),
            depends_on: deps.iter().map(|d| d.to_string()).collect(),
            ..Default::default()
        }
    }

    fn names(apps: &[AppInstance], order: &[(usize, Option<String>)]) -> Vec<String> {
        order.iter().map(|(i, _)| apps[*i].name.clone()).collect()
    }

    #[test]
    fn dependencies_come_first() {
        let apps = vec![app("client", &["web"]), app("web", &["db"]), app("db", &[])];
        let o = order(&apps);
        assert_eq!(names(&apps, &o), vec!["db", "web", "client"]);
        assert!(o.iter().all(|(_, p)| p.is_none()));
    }

    #[test]
    fn unknown_dependencies_and_cycles_are_reported() {
        let apps = vec![
            app("a", &["b"]),
            app("b", &["a"]),
            app("c", &["ghost"]),
            app("d", &[]),
        ];
        let o = order(&apps);
        assert_eq!(o.len(), 4);
        let problem = |n: &str| {
            o.iter()
                .find(|(i, _)| apps[*i].name == n)
                .and_then(|(_, p)| p.clone())
        };
        assert_eq!(problem("d"), None);
        assert!(problem("c").unwrap().contains("ghost"));
        assert!(problem("a").unwrap().contains("cycle"));
        assert!(problem("b").unwrap().contains("cycle"));
    }
}
