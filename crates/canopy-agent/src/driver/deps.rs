//! Start order of a deployment's apps from `depends_on`: dependencies first, so one pass can
//! see a dependency's state before it decides about the apps that wait for it.
//!
//! The container driver and the VM driver each converge their own half of every app, side by
//! side, so a dependency may be run (in whole or in part) by the other driver. Each driver then
//! also consults [`Reported`], the edge's merged report of the previous pass: an app waits for a
//! VM app exactly as it waits for a container app, at most one pass later.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use canopy_proto::{AppInstance, AppState, DeploymentInstance};

/// The merged state of every app in the edge's last report, by (deployment id, app name).
pub type Reported = HashMap<(String, String), AppState>;

/// The dependencies of `app` that are not running yet, each as `name (state)` or, when nothing
/// is known about it yet, `name`.
///
/// `states` holds this pass's states of the apps the calling driver converged before `app`
/// ([`order`] puts dependencies first). A dependency with workloads of the other driver
/// (`other_half` says which apps have some) must also be running in `reported`.
pub fn waiting_on(
    dep: &DeploymentInstance,
    app: &AppInstance,
    states: &HashMap<&str, AppState>,
    reported: &Reported,
    other_half: impl Fn(&AppInstance) -> bool,
) -> Vec<String> {
    app.depends_on
        .iter()
        .filter_map(|d| {
            let own = states.get(d.as_str()).copied();
            let split = dep.apps.iter().any(|a| &a.name == d && other_half(a));
            let other = if split {
                reported
                    .get(&(dep.deployment_id.clone(), d.clone()))
                    .copied()
            } else {
                Some(AppState::Running)
            };
            match (own, other) {
                (Some(AppState::Running), Some(AppState::Running)) => None,
                (Some(s), _) if s != AppState::Running => Some(format!("{d} ({})", state_word(s))),
                (_, Some(s)) if s != AppState::Running => Some(format!("{d} ({})", state_word(s))),
                _ => Some(d.clone()),
            }
        })
        .collect()
}

/// The app message of an app held back by [`waiting_on`]'s answer.
pub fn waiting_message(waiting_on: &[String]) -> String {
    format!(
        "waiting for {} to be running and healthy",
        waiting_on
            .iter()
            .map(|d| format!("app {d}"))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// The word for an app state in messages.
pub fn state_word(s: AppState) -> &'static str {
    match s {
        AppState::Deploying => "deploying",
        AppState::Running => "running",
        AppState::Down => "down",
        AppState::Waiting => "waiting",
    }
}

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

    fn deployment(apps: Vec<AppInstance>) -> DeploymentInstance {
        DeploymentInstance {
            deployment_id: "d".into(),
            apps,
            ..Default::default()
        }
    }

    #[test]
    fn a_dependency_split_between_drivers_must_be_running_in_both() {
        let mut db = app("db", &[]);
        db.vms = vec![canopy_proto::VmSpec::default()];
        let dep = deployment(vec![app("web", &["db", "cache"]), db, app("cache", &[])]);
        let web = &dep.apps[0];
        let vm_half = |a: &AppInstance| !a.vms.is_empty();
        let running: HashMap<&str, AppState> =
            [("db", AppState::Running), ("cache", AppState::Running)].into();
        let mut reported = Reported::new();

        // db's container half runs, its VM half was never reported.
        assert_eq!(
            waiting_on(&dep, web, &running, &reported, vm_half),
            vec!["db"]
        );
        reported.insert(("d".into(), "db".into()), AppState::Deploying);
        assert_eq!(
            waiting_on(&dep, web, &running, &reported, vm_half),
            vec!["db (deploying)"]
        );
        reported.insert(("d".into(), "db".into()), AppState::Running);
        assert!(waiting_on(&dep, web, &running, &reported, vm_half).is_empty());
        // This driver's own half still counts, and so does a dependency not converged at all.
        let own_down: HashMap<&str, AppState> = [("db", AppState::Down)].into();
        assert_eq!(
            waiting_on(&dep, web, &own_down, &reported, vm_half),
            vec!["db (down)", "cache"]
        );
        assert_eq!(
            waiting_message(&["db (down)".into(), "cache".into()]),
            "waiting for app db (down), app cache to be running and healthy"
        );
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
