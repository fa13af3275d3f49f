//! The agent's data directory (`DATA_DIR`): what it must keep to work without the control
//! plane and to resume after a restart.
//!
//! | file | content |
//! |---|---|
//! | `credential` | the edge's bearer credential; mode 0600 from its creation, never logged |
//! | `edge.json` | `{edgeId, edgeName, project, server}`: who this agent is, and for which server |
//! | `desired.json` | the last [`DesiredState`] received, applied again at start (offline autonomy) |
//! | `state.json` | `{seq, appliedGeneration}`: the status sequence, which keeps growing across restarts |
//!
//! Every file is written the same way, so a crash leaves the old or the new content and never
//! a torn one: a temporary file created with mode 0600 (desired states may carry registry
//! passwords), written, fsynced, renamed over the target, then the directory fsynced. The
//! directory itself is created with mode 0700. These are blocking calls, meant for
//! `spawn_blocking` in async code.

use std::fs::{self, File};
use std::io::ErrorKind;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use canopy_proto::{DesiredState, EnrollResponse, Generation};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::client::Credential;
use crate::error::AgentError;

const CREDENTIAL: &str = "credential";
const EDGE: &str = "edge.json";
const DESIRED: &str = "desired.json";
const STATE: &str = "state.json";

/// Who this agent is: written at enrollment next to the credential.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EdgeRecord {
    pub edge_id: String,
    pub edge_name: String,
    pub project: String,
    /// The control plane the edge enrolled with (normalized URL).
    pub server: String,
}

/// What the agent must not forget across restarts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentState {
    /// The sequence number of the last status report sent (or about to be sent).
    pub seq: u64,
    /// The generation of the last desired state a convergence pass applied.
    pub applied_generation: Generation,
}

/// The agent's data directory.
#[derive(Debug, Clone)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    /// Opens the directory, creating it (mode 0700) when missing.
    pub fn open(root: impl Into<PathBuf>) -> Result<DataDir, AgentError> {
        let root = root.into();
        match fs::metadata(&root) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(io_error(
                    "use",
                    &root,
                    std::io::Error::new(ErrorKind::NotADirectory, "not a directory"),
                ));
            }
            Err(e) if e.kind() == ErrorKind::NotFound => fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&root)
                .map_err(|e| io_error("create", &root, e))?,
            Err(e) => return Err(io_error("read", &root, e)),
        }
        // Temporary files of a write a crash interrupted: the agent owns this directory.
        canopy_fs::remove_leftovers(&root).map_err(|e| io_error("clean", &root, e))?;
        Ok(DataDir { root })
    }

    /// The directory's path.
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// The edge's credential, if it enrolled.
    pub fn credential(&self) -> Result<Option<Credential>, AgentError> {
        let path = self.root.join(CREDENTIAL);
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_error("read", &path, e)),
        };
        if let Ok(m) = fs::metadata(&path)
            && m.permissions().mode() & 0o077 != 0
        {
            warn!(
                path = %path.display(),
                mode = format!("{:o}", m.permissions().mode() & 0o777),
                "the credential file is readable by other users; it should be 0600"
            );
        }
        Credential::new(&text).map(Some).ok_or_else(|| {
            io_error(
                "use",
                &path,
                std::io::Error::new(ErrorKind::InvalidData, "the credential file is empty"),
            )
        })
    }

    /// Who the edge is, if it enrolled.
    pub fn edge(&self) -> Result<Option<EdgeRecord>, AgentError> {
        self.read_json(EDGE)
    }

    /// Keeps an enrollment: the credential first (it is what cannot be had again), then
    /// `edge.json`. A new identity starts with no desired state: the old edge's generations
    /// mean nothing to the new one, and would hide its lower ones.
    pub fn save_enrollment(
        &self,
        server: &str,
        enrolled: &EnrollResponse,
    ) -> Result<EdgeRecord, AgentError> {
        let credential =
            Credential::new(&enrolled.credential).ok_or_else(|| AgentError::DataDir {
                op: "write",
                path: self.root.join(CREDENTIAL),
                source: "the control plane answered an empty credential".into(),
            })?;
        let mut text = credential.expose().to_string();
        text.push('\n');
        self.write_atomic(CREDENTIAL, text.as_bytes())?;
        let record = EdgeRecord {
            edge_id: enrolled.edge_id.clone(),
            edge_name: enrolled.edge_name.clone(),
            project: enrolled.project.clone(),
            server: server.to_string(),
        };
        self.write_json(EDGE, &record)?;
        self.remove(DESIRED)?;
        let state = self.state()?;
        self.save_state(&AgentState {
            seq: state.seq,
            applied_generation: Generation(0),
        })?;
        Ok(record)
    }

    /// The last desired state received, if any.
    pub fn desired(&self) -> Result<Option<DesiredState>, AgentError> {
        self.read_json(DESIRED)
    }

    /// Keeps a desired state (atomically).
    pub fn save_desired(&self, desired: &DesiredState) -> Result<(), AgentError> {
        self.write_json(DESIRED, desired)
    }

    /// The persisted sequence and applied generation (zero when never written).
    pub fn state(&self) -> Result<AgentState, AgentError> {
        Ok(self.read_json(STATE)?.unwrap_or_default())
    }

    /// Keeps the sequence and applied generation (atomically).
    pub fn save_state(&self, state: &AgentState) -> Result<(), AgentError> {
        self.write_json(STATE, state)
    }

    fn read_json<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>, AgentError> {
        let path = self.root.join(name);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_error("read", &path, e)),
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| AgentError::DataDir {
                op: "parse",
                path,
                source: Box::new(e),
            })
    }

    fn write_json<T: Serialize>(&self, name: &str, value: &T) -> Result<(), AgentError> {
        let mut bytes = serde_json::to_vec_pretty(value).map_err(|e| AgentError::DataDir {
            op: "serialize",
            path: self.root.join(name),
            source: Box::new(e),
        })?;
        bytes.push(b'\n');
        self.write_atomic(name, &bytes)
    }

    /// Owner-only, atomically and durably (`canopy-fs`: temporary file with mode 0600 from its
    /// creation, write, fsync, rename, fsync of the directory).
    fn write_atomic(&self, name: &str, bytes: &[u8]) -> Result<(), AgentError> {
        let path = self.root.join(name);
        canopy_fs::AtomicFile::new(&path)
            .mode(0o600)
            .write(bytes)
            .map_err(|e| io_error("write", &path, e))
    }

    fn remove(&self, name: &str) -> Result<(), AgentError> {
        let path = self.root.join(name);
        match fs::remove_file(&path) {
            Ok(()) => self.sync_dir(),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_error("remove", &path, e)),
        }
    }

    fn sync_dir(&self) -> Result<(), AgentError> {
        File::open(&self.root)
            .and_then(|d| d.sync_all())
            .map_err(|e| io_error("sync", &self.root, e))
    }
}

fn io_error(op: &'static str, path: &Path, e: std::io::Error) -> AgentError {
    AgentError::DataDir {
        op,
        path: path.to_path_buf(),
        source: Box::new(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use canopy_proto::{AppInstance, ContainerSpec, DeploymentInstance, RegistryAuth};

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    fn sample(generation: u64) -> DesiredState {
        DesiredState {
            generation: Generation(generation),
            deployments: vec![DeploymentInstance {
                deployment_id: "d1".into(),
                project: "default".into(),
                package: "web".into(),
                package_version: "1.0.0".into(),
                generation: 3,
                apps: vec![AppInstance {
                    name: "web".into(),
                    version: "1.0.0".into(),
                    namespace: "web".into(),
                    spec_hash: "abc".into(),
                    containers: vec![ContainerSpec {
                        name: "httpd".into(),
                        image: "localhost/busybox:canopy-test".into(),
                        ..Default::default()
                    }],
                    registry_auth: Some(RegistryAuth {
                        server: "r".into(),
                        username: "u".into(),
                        password: "secret".into(),
                    }),
                    ..Default::default()
                }],
            }],
            ..Default::default()
        }
    }

    #[test]
    fn the_directory_is_created_private() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("a/b");
        let dir = DataDir::open(&root).unwrap();
        assert_eq!(mode(&root), 0o700);
        assert_eq!(dir.credential().unwrap(), None);
        assert_eq!(dir.edge().unwrap(), None);
        assert_eq!(dir.desired().unwrap(), None);
        assert_eq!(dir.state().unwrap(), AgentState::default());
        // A file where the directory should be is refused.
        fs::write(tmp.path().join("file"), "").unwrap();
        assert!(DataDir::open(tmp.path().join("file")).is_err());
    }

    #[test]
    fn desired_state_round_trips_atomically_and_privately() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DataDir::open(tmp.path()).unwrap();
        // A temporary file left by a crash (with a lax mode) is removed when the agent starts.
        fs::write(tmp.path().join(".desired.json.tmp"), "torn").unwrap();
        let dir = DataDir::open(dir.path()).unwrap();
        dir.save_desired(&sample(4)).unwrap();
        assert_eq!(dir.desired().unwrap(), Some(sample(4)));
        dir.save_desired(&sample(5)).unwrap();
        assert_eq!(dir.desired().unwrap(), Some(sample(5)));
        // Registry passwords are in there: private to the agent.
        assert_eq!(mode(&tmp.path().join(DESIRED)), 0o600);
        let names: Vec<String> = fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, [DESIRED], "no temporary file left behind");
        // The file is the protocol's JSON.
        let text = fs::read_to_string(tmp.path().join(DESIRED)).unwrap();
        assert!(text.contains("\"deploymentId\": \"d1\""), "{text}");
    }

    #[test]
    fn a_corrupt_file_is_an_error_naming_it() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DataDir::open(tmp.path()).unwrap();
        fs::write(tmp.path().join(DESIRED), "{not json").unwrap();
        let err = dir.desired().unwrap_err().to_string();
        assert!(err.contains("parse") && err.contains(DESIRED), "{err}");
    }

    #[test]
    fn enrollment_keeps_a_private_credential_and_starts_a_new_identity() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DataDir::open(tmp.path()).unwrap();
        dir.save_desired(&sample(9)).unwrap();
        dir.save_state(&AgentState {
            seq: 12,
            applied_generation: Generation(9),
        })
        .unwrap();
        let enrolled = EnrollResponse {
            edge_id: "e1".into(),
            edge_name: "store-042".into(),
            project: "default".into(),
            credential: "cne_abc".into(),
            heartbeat_seconds: 30,
        };
        let record = dir.save_enrollment("http://cp:8080", &enrolled).unwrap();
        assert_eq!(mode(&tmp.path().join(CREDENTIAL)), 0o600);
        assert_eq!(dir.credential().unwrap().unwrap().expose(), "cne_abc");
        assert_eq!(dir.edge().unwrap(), Some(record.clone()));
        assert_eq!(record.server, "http://cp:8080");
        assert_eq!(dir.desired().unwrap(), None, "old desired state dropped");
        assert_eq!(
            dir.state().unwrap(),
            AgentState {
                seq: 12,
                applied_generation: Generation(0)
            },
            "the sequence keeps growing"
        );
        let edge = fs::read_to_string(tmp.path().join(EDGE)).unwrap();
        assert!(edge.contains("\"edgeName\": \"store-042\""), "{edge}");
        assert!(!edge.contains("cne_abc"));
    }
}
