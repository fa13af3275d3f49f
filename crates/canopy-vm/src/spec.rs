//! What a virtual machine should be: the serde shape (camelCase, like the rest of Canopy's API)
//! that a deployment template will eventually render and the agent will hand to [`crate::VmHost`].

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::VmError;

/// A virtual machine to run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VmSpec {
    /// Unique on the host; the VM's directory name. `[a-z0-9][a-z0-9-]*`, at most 63 characters.
    pub name: String,
    /// Virtual CPUs (1..=64).
    pub cpus: u32,
    /// Guest memory in MiB (at least 16).
    pub memory_mib: u64,
    /// How the VM boots.
    pub boot: Boot,
    /// Empty data disks, created once and kept across restarts (deleted by `remove`).
    #[serde(default)]
    pub extra_disks: Vec<ExtraDisk>,
    /// TCP ports forwarded from the host to the guest (QEMU user networking).
    #[serde(default)]
    pub ports: Vec<PortForward>,
    /// A cloud-init NoCloud seed to attach.
    #[serde(default)]
    pub cloud_init: Option<CloudInit>,
    /// Serve the console over VNC on 127.0.0.1 (port 5900 + display).
    #[serde(default)]
    pub vnc: bool,
}

/// How a VM boots.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Boot {
    /// From a disk image (qcow2 or raw); the VM writes to a qcow2 overlay, never to the image.
    Disk { image: ImageSource },
    /// Directly from a kernel (and initrd), as QEMU's `-kernel/-initrd/-append`.
    #[serde(rename_all = "camelCase")]
    Kernel {
        kernel: ImageSource,
        #[serde(default)]
        initrd: Option<ImageSource>,
        #[serde(default)]
        cmdline: String,
    },
}

/// A file to download (http, https) or copy (file://), identified by its content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageSource {
    pub url: String,
    /// Lowercase hex sha256 of the content; the download is refused when it does not match.
    pub sha256: String,
}

/// An empty data disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExtraDisk {
    pub size_gib: u32,
}

/// A TCP port of the guest published on the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortForward {
    pub guest_port: u16,
    pub host_port: u16,
    /// Host address to bind; 127.0.0.1 when absent (publishing wider is a deliberate choice).
    #[serde(default)]
    pub host_ip: Option<IpAddr>,
}

/// cloud-init NoCloud data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CloudInit {
    pub user_data: String,
    /// Defaults to `instance-id: <name>` and `local-hostname: <name>`.
    #[serde(default)]
    pub meta_data: Option<String>,
}

impl VmSpec {
    /// Checks what QEMU would otherwise reject late (or what would escape the VM directory).
    pub fn validate(&self) -> Result<(), VmError> {
        validate_name(&self.name)?;
        let bad = |reason: String| VmError::InvalidSpec {
            name: self.name.clone(),
            reason,
        };
        if !(1..=64).contains(&self.cpus) {
            return Err(bad(format!("cpus must be 1..=64, not {}", self.cpus)));
        }
        if self.memory_mib < 16 {
            return Err(bad(format!(
                "memoryMib must be at least 16, not {}",
                self.memory_mib
            )));
        }
        for disk in &self.extra_disks {
            if disk.size_gib == 0 {
                return Err(bad("extraDisks: sizeGib must be at least 1".into()));
            }
        }
        let mut seen = std::collections::HashSet::new();
        for port in &self.ports {
            if port.guest_port == 0 || port.host_port == 0 {
                return Err(bad("ports: port 0 is not a port".into()));
            }
            if !seen.insert((port.host_ip, port.host_port)) {
                return Err(bad(format!(
                    "ports: host port {} used twice",
                    port.host_port
                )));
            }
        }
        if let Boot::Kernel { cmdline, .. } = &self.boot
            && cmdline.contains(['\n', '\0'])
        {
            return Err(bad("cmdline must be a single line".into()));
        }
        Ok(())
    }

    /// The images this spec needs, for [`crate::ImageCache::gc`].
    pub fn images(&self) -> Vec<&ImageSource> {
        match &self.boot {
            Boot::Disk { image } => vec![image],
            Boot::Kernel { kernel, initrd, .. } => {
                std::iter::once(kernel).chain(initrd.as_ref()).collect()
            }
        }
    }
}

/// VM names become directory names and QEMU `-name` values: keep them boring.
pub(crate) fn validate_name(name: &str) -> Result<(), VmError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-');
    if ok {
        Ok(())
    } else {
        Err(VmError::InvalidSpec {
            name: name.to_string(),
            reason: "name must be 1-63 characters of a-z, 0-9 and '-', not starting with '-'"
                .into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_is_camel_case_json() {
        let json = serde_json::json!({
            "name": "web",
            "cpus": 1,
            "memoryMib": 128,
            "boot": {"kernel": {
                "kernel": {"url": "file:///k", "sha256": "00"},
                "cmdline": "console=ttyS0"
            }},
            "ports": [{"guestPort": 80, "hostPort": 8080}],
            "cloudInit": {"userData": "#cloud-config\n"},
            "extraDisks": [{"sizeGib": 1}],
            "vnc": true
        });
        let spec: VmSpec = serde_json::from_value(json).unwrap();
        assert_eq!(spec.memory_mib, 128);
        assert_eq!(spec.ports[0].host_ip, None);
        assert!(matches!(spec.boot, Boot::Kernel { ref initrd, .. } if initrd.is_none()));
        spec.validate().unwrap();
        let back = serde_json::to_value(&spec).unwrap();
        assert_eq!(back["extraDisks"][0]["sizeGib"], 1);
    }

    #[test]
    fn names_that_escape_or_confuse_are_refused() {
        for bad in ["", "../x", "A", "-a", "a/b", &"a".repeat(64)] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
        validate_name("vm-1").unwrap();
    }
}
