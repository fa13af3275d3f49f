//! Runs and supervises QEMU virtual machines on a Canopy edge: the foundation of the agent's VM
//! driver, next to its container driver.
//!
//! Why QEMU directly (and not libvirt or KubeVirt): an edge is a single small machine without
//! Kubernetes or a system daemon to lean on; QEMU is one Debian package, and everything a
//! supervisor needs is in QEMU itself: a pidfile, QMP (status, power button, quit, accelerator,
//! VNC address), a serial log, user-mode networking with port forwards, and qcow2 overlays.
//!
//! - [`VmSpec`] says what to run (camelCase serde, for templates and the wire).
//! - [`ImageCache`] holds verified, content-addressed base images (`cache/sha256/<hex>`).
//! - [`VmHost`] starts, stops, adopts and removes VMs under `<data dir>/vms/<name>/`; all of its
//!   state is on disk and in the QEMU processes, so an agent restart loses nothing.
//! - [`Accel`] / [`AccelChoice`]: KVM only when a probe guest actually runs under it, else TCG
//!   with the reason (a `/dev/kvm` that opens is no proof that KVM works).
//! - [`SerialMark`], [`port_answers`]: evidence that a guest came up (QMP `running` is not).
//!
//! This crate must not depend on the agent, the control plane or the store: it knows nothing of
//! deployments, and the agent maps [`VmState`] onto what it reports. It needs on the edge:
//! `qemu-system-x86_64` and `qemu-img` (Debian qemu-system-x86, qemu-utils) and, for cloud-init
//! seeds, `genisoimage` (or `xorriso`, or `mkfs.vfat` + `mcopy`).

mod accel;
mod cache;
mod error;
mod host;
mod qmp;
mod readiness;
mod seed;
mod spec;

pub use accel::{
    ACCEL_ENV, Accel, AccelChoice, Accelerator, PROBE_TIMEOUT, probe_bios, probe_guest,
};
pub use cache::{BasicAuth, DEFAULT_MAX_IMAGE_BYTES, ImageCache};
pub use error::VmError;
pub use host::{StopOutcome, VmHost, VmInfo, VmState, VmStatus};
pub use readiness::{SerialMark, port_answers};
pub use spec::{Boot, CloudInit, ExtraDisk, ImageSource, PortForward, VmSpec};
