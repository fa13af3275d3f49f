//! Folding what the engine says about an app's containers into one [`AppState`] and a message a
//! user can act on. Pure: the engine-facing code gathers [`Seen`] values, this decides.

use canopy_proto::{AppState, Health};

/// What the driver knows about one container of an app.
#[derive(Debug, Clone, PartialEq)]
pub enum Seen {
    /// It does not exist (yet).
    Missing,
    /// Making it failed in this pass (pull, create, start...): the reason.
    Failed(String),
    /// It exists.
    Present(Observed),
}

/// The parts of an engine inspect that decide the app state.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Observed {
    /// Created from the app's current `spec_hash`.
    pub current: bool,
    /// Engine state: `running`, `created`, `exited`, `restarting`, ...
    pub state: String,
    /// The health check's verdict ([`Health::None`] without one).
    pub health: Health,
    pub exit_code: i64,
    /// The engine's error for the last start, if any.
    pub error: String,
    pub restarts: u32,
    /// Output of the last health check (for unhealthy containers).
    pub health_output: String,
}

/// State of one container, with a message unless it is fine.
pub fn container_state(name: &str, seen: &Seen) -> (AppState, Option<String>) {
    let o = match seen {
        Seen::Missing => {
            return (
                AppState::Deploying,
                Some(format!("container {name} is not created yet")),
            );
        }
        Seen::Failed(why) => return (AppState::Down, Some(format!("container {name}: {why}"))),
        Seen::Present(o) => o,
    };
    if !o.current {
        return (
            AppState::Deploying,
            Some(format!(
                "container {name} still runs the previous generation"
            )),
        );
    }
    let exited = || {
        let mut m = format!("container {name} exited with code {}", o.exit_code);
        if !o.error.is_empty() {
            m.push_str(&format!(" ({})", o.error));
        }
        if o.restarts > 0 {
            m.push_str(&format!(" after {} restarts", o.restarts));
        }
        m
    };
    match o.state.as_str() {
        "running" => match &o.health {
            Health::None | Health::Healthy => (AppState::Running, None),
            Health::Starting => (
                AppState::Deploying,
                Some(format!(
                    "container {name} is running; health check starting"
                )),
            ),
            Health::Unhealthy => {
                let mut m = format!("container {name} is unhealthy");
                if !o.health_output.is_empty() {
                    m.push_str(&format!(": {}", o.health_output));
                }
                (AppState::Down, Some(m))
            }
            Health::Other(other) => (
                AppState::Deploying,
                Some(format!("container {name} is running; health {other}")),
            ),
        },
        "created" => (
            AppState::Deploying,
            Some(format!("container {name} is created, not started yet")),
        ),
        "restarting" => (AppState::Down, Some(format!("{}; restarting", exited()))),
        "exited" | "stopped" | "dead" => (AppState::Down, Some(exited())),
        "paused" => (AppState::Down, Some(format!("container {name} is paused"))),
        other => (
            AppState::Deploying,
            Some(format!(
                "container {name} is {}",
                if other.is_empty() {
                    "in an unknown state"
                } else {
                    other
                }
            )),
        ),
    }
}

/// The app state: Down if any container is down, else Deploying if any is not ready yet, else
/// Running (an app without containers is Running: nothing to wait for). The message lists the
/// containers that decided it.
pub fn fold<'a>(containers: impl IntoIterator<Item = (&'a str, &'a Seen)>) -> (AppState, String) {
    let mut worst = AppState::Running;
    let mut messages: Vec<(AppState, String)> = Vec::new();
    for (name, seen) in containers {
        let (state, message) = container_state(name, seen);
        if rank(state) > rank(worst) {
            worst = state;
        }
        if let Some(m) = message {
            messages.push((state, m));
        }
    }
    let message = messages
        .into_iter()
        .filter(|(s, _)| *s == worst)
        .map(|(_, m)| m)
        .collect::<Vec<_>>()
        .join("; ");
    (worst, message)
}

/// How bad an app state is: an app is as bad as its worst workload.
pub fn rank(s: AppState) -> u8 {
    match s {
        AppState::Running => 0,
        AppState::Waiting => 1,
        AppState::Deploying => 2,
        AppState::Down => 3,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn present(state: &str, health: &str) -> Seen {
        Seen::Present(Observed {
            current: true,
            state: state.into(),
            health: Health::from(health),
            ..Default::default()
        })
    }

    #[test]
    fn running_needs_every_container_running_and_healthy() {
        let a = present("running", "healthy");
        let b = present("running", "");
        assert_eq!(
            fold([("a", &a), ("b", &b)]),
            (AppState::Running, String::new())
        );
        let c = present("running", "starting");
        let (state, msg) = fold([("a", &a), ("c", &c)]);
        assert_eq!(state, AppState::Deploying);
        assert!(msg.contains("container c"), "{msg}");
    }

    #[test]
    fn failures_name_the_container_and_the_reason() {
        let failed = Seen::Failed("cannot pull image localhost/nope:1".into());
        let ok = present("running", "");
        let (state, msg) = fold([("web", &failed), ("side", &ok)]);
        assert_eq!(state, AppState::Down);
        assert_eq!(msg, "container web: cannot pull image localhost/nope:1");

        let exited = Seen::Present(Observed {
            current: true,
            state: "exited".into(),
            exit_code: 3,
            restarts: 2,
            ..Default::default()
        });
        let (state, msg) = fold([("job", &exited)]);
        assert_eq!(state, AppState::Down);
        assert_eq!(msg, "container job exited with code 3 after 2 restarts");

        let sick = Seen::Present(Observed {
            current: true,
            state: "running".into(),
            health: Health::Unhealthy,
            health_output: "connection refused".into(),
            ..Default::default()
        });
        assert_eq!(
            fold([("web", &sick)]).1,
            "container web is unhealthy: connection refused"
        );
    }

    #[test]
    fn old_generations_and_missing_containers_are_still_deploying() {
        let old = Seen::Present(Observed {
            current: false,
            state: "running".into(),
            ..Default::default()
        });
        assert_eq!(fold([("a", &old)]).0, AppState::Deploying);
        assert_eq!(fold([("a", &Seen::Missing)]).0, AppState::Deploying);
        assert_eq!(fold(std::iter::empty()).0, AppState::Running);
    }

    fn seen() -> impl Strategy<Value = Seen> {
        let state = prop::sample::select(vec![
            "running",
            "created",
            "exited",
            "restarting",
            "paused",
            "dead",
            "removing",
            "",
        ]);
        let health = prop::sample::select(vec!["", "healthy", "starting", "unhealthy"]);
        prop_oneof![
            Just(Seen::Missing),
            "[a-z ]{0,10}".prop_map(Seen::Failed),
            (any::<bool>(), state, health, any::<u8>()).prop_map(|(current, s, h, r)| {
                Seen::Present(Observed {
                    current,
                    state: s.into(),
                    health: Health::from(h),
                    restarts: u32::from(r),
                    ..Default::default()
                })
            }),
        ]
    }

    proptest! {
        #[test]
        fn the_app_is_as_bad_as_its_worst_container(list in prop::collection::vec(seen(), 0..6)) {
            let named: Vec<(String, Seen)> =
                list.into_iter().enumerate().map(|(i, s)| (format!("c{i}"), s)).collect();
            let (state, message) = fold(named.iter().map(|(n, s)| (n.as_str(), s)));
            let each: Vec<AppState> =
                named.iter().map(|(n, s)| container_state(n, s).0).collect();
            prop_assert_eq!(rank(state), each.iter().map(|s| rank(*s)).max().unwrap_or(0));
            prop_assert_eq!(state == AppState::Running, message.is_empty());
            prop_assert!(state != AppState::Waiting, "containers alone never make an app wait");
        }
    }
}
