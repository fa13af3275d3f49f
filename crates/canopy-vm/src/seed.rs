//! cloud-init NoCloud seeds: a small image labelled `cidata` holding `user-data` and `meta-data`.
//!
//! cloud-init finds the seed by its label on any block device, so the format does not matter to
//! the guest; what matters is which tool the edge has. In order of preference:
//! `genisoimage` (Debian package genisoimage; scripts/vm-image.sh installs it), `xorriso`
//! (`-as mkisofs`, same arguments), or `mkfs.vfat` + `mcopy` (dosfstools + mtools) for a 2 MiB
//! vfat image. The seed is rebuilt at every start, so a changed spec takes effect on restart.

use std::path::{Path, PathBuf};

use tokio::process::Command;

use crate::{CloudInit, VmError};

/// Writes `<vm_dir>/seed.img` for `cloud_init` and returns its path.
pub(crate) async fn build_seed(
    name: &str,
    vm_dir: &Path,
    cloud_init: &CloudInit,
) -> Result<PathBuf, VmError> {
    let src = vm_dir.join("seed");
    let _ = tokio::fs::remove_dir_all(&src).await;
    tokio::fs::create_dir_all(&src)
        .await
        .map_err(VmError::io("cannot create", &src))?;
    let meta = cloud_init
        .meta_data
        .clone()
        .unwrap_or_else(|| format!("instance-id: {name}\nlocal-hostname: {name}\n"));
    let user = src.join("user-data");
    let meta_path = src.join("meta-data");
    tokio::fs::write(&user, &cloud_init.user_data)
        .await
        .map_err(VmError::io("cannot write", &user))?;
    tokio::fs::write(&meta_path, meta)
        .await
        .map_err(VmError::io("cannot write", &meta_path))?;

    let seed = vm_dir.join("seed.img");
    let _ = tokio::fs::remove_file(&seed).await;
    let iso_args = |out: &Path| -> Vec<String> {
        vec![
            "-output".into(),
            out.display().to_string(),
            "-volid".into(),
            "cidata".into(),
            "-joliet".into(),
            "-rock".into(),
            "-quiet".into(),
            user.display().to_string(),
            meta_path.display().to_string(),
        ]
    };
    if let Some(tool) = find_tool("genisoimage") {
        run(name, &tool, &iso_args(&seed)).await?;
    } else if let Some(tool) = find_tool("xorriso") {
        let mut args = vec!["-as".to_string(), "mkisofs".to_string()];
        args.extend(iso_args(&seed));
        run(name, &tool, &args).await?;
    } else if let (Some(mkfs), Some(mcopy)) = (find_tool("mkfs.vfat"), find_tool("mcopy")) {
        let file = tokio::fs::File::create(&seed)
            .await
            .map_err(VmError::io("cannot create", &seed))?;
        file.set_len(2 << 20)
            .await
            .map_err(VmError::io("cannot size", &seed))?;
        let seed_s = seed.display().to_string();
        run(name, &mkfs, &["-n".into(), "cidata".into(), seed_s.clone()]).await?;
        for f in [&user, &meta_path] {
            let to = format!("::{}", f.file_name().unwrap().to_string_lossy());
            run(
                name,
                &mcopy,
                &["-i".into(), seed_s.clone(), f.display().to_string(), to],
            )
            .await?;
        }
    } else {
        return Err(VmError::Tool {
            name: name.to_string(),
            tool: "cloud-init seed".into(),
            detail: "none of genisoimage, xorriso or mkfs.vfat+mcopy is installed \
                     (apt-get install genisoimage)"
                .into(),
        });
    }
    let _ = tokio::fs::remove_dir_all(&src).await;
    Ok(seed)
}

/// The absolute path of `tool` on `PATH` (plus the sbin directories, which root's PATH may lack).
pub(crate) fn find_tool(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin"].map(PathBuf::from))
        .map(|dir| dir.join(tool))
        .find(|p| p.is_file())
}

/// Runs a tool to completion; a failure carries its stderr.
pub(crate) async fn run(name: &str, tool: &Path, args: &[String]) -> Result<String, VmError> {
    let tool_name = tool.display().to_string();
    let output = Command::new(tool)
        .args(args)
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| VmError::Tool {
            name: name.to_string(),
            tool: tool_name.clone(),
            detail: e.to_string(),
        })?;
    if !output.status.success() {
        return Err(VmError::Tool {
            name: name.to_string(),
            tool: tool_name,
            detail: format!(
                "{}: {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}
