//! Engine failures with a known host-side cause, and the exact fix to name with them.
//!
//! Some hosts need Podman settings before any container can start (docs/HOST-SETUP.md): crun
//! does not run containers where cgroups v1 and v2 are mounted side by side (hybrid), and rootful
//! Podman gives containers more open files (and, once open files are capped, more processes)
//! than some hosts' hard limits allow. The engine's own words ("error setting rlimit type 7:
//! operation not permitted") do not say what to change; the hint does.

/// The fix for a known cause in `engine_error`, if it has one.
pub(super) fn for_error(engine_error: &str) -> Option<String> {
    let lower = engine_error.to_ascii_lowercase();
    if lower.contains("cgroups in hybrid mode not supported") {
        return Some(
            "this host mounts cgroups v1 and v2 side by side, which crun cannot run containers \
             on: use runc (`runtime = \"runc\"` under [engine] in the engine's containers.conf, \
             with runc installed) and restart the engine; see docs/HOST-SETUP.md"
                .to_string(),
        );
    }
    if lower.contains("rlimit") && lower.contains("not permitted") {
        return Some(format!(
            "the engine gives containers more open files or processes than this host allows: \
             cap both (capping one alone raises the other's default) with `default_ulimits = \
             [{}]` under [containers] in the engine's containers.conf (this host's hard limits) \
             and restart the engine; see docs/HOST-SETUP.md",
            ulimit_caps()
        ));
    }
    None
}

/// `"nofile=N:N", "nproc=M:M"`: this process's hard limit of open files (the engine on the
/// same host normally has the same), and of processes at most [`PODMAN_NPROC`].
fn ulimit_caps() -> String {
    use rustix::process::{Resource, getrlimit};
    let nofile = getrlimit(Resource::Nofile)
        .maximum
        .map_or_else(|| "N".to_string(), |n| n.to_string());
    let nproc = getrlimit(Resource::Nproc)
        .maximum
        .unwrap_or(PODMAN_NPROC)
        .min(PODMAN_NPROC);
    format!("\"nofile={nofile}:{nofile}\", \"nproc={nproc}:{nproc}\"")
}

/// The process limit Podman's own process runs with (Podman 4 lowers its own limit to this; a
/// container asking for more fails where root cannot raise limits).
const PODMAN_NPROC: u64 = 32_768;

/// `cause`, followed by the fix when the cause is a known one.
pub(super) fn explain(cause: String) -> String {
    match for_error(&cause) {
        Some(hint) => format!("{cause}. Fix: {hint}"),
        None => cause,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_causes_name_their_fix() {
        let runc = "runc: runc create failed: unable to start container process: error during \
                    container init: error setting rlimits for ready process: error setting rlimit \
                    type 7: operation not permitted: OCI permission denied";
        let hint = for_error(runc).expect("a hint");
        assert!(hint.contains("default_ulimits = [\"nofile="), "{hint}");
        assert!(hint.contains("\"nproc="), "{hint}");
        let crun = "crun: cgroups in hybrid mode not supported, drop all controllers from \
                    cgroupv2: OCI runtime error";
        let hint = for_error(crun).expect("a hint");
        assert!(hint.contains("runtime = \"runc\""), "{hint}");
        assert_eq!(
            for_error("listen tcp4 :8080: bind: address already in use"),
            None
        );
        assert_eq!(explain("plain".into()), "plain");
        assert!(explain(crun.into()).starts_with(crun));
    }
}
