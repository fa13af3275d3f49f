//! Flags of `canopy server` / `canopy up` about what uploads may cost: the upload spool (where
//! bodies are received on disk, and how much it holds), how many uploads are parsed in memory at
//! once, and the quotas of upload sessions (docs/CATALOG.md, "Upload limits and quotas").

use std::path::PathBuf;
use std::time::Duration;

use canopy_agent::config::parse_byte_size;
use canopy_server::app::UploadLimits;

use super::args::duration;

fn defaults() -> UploadLimits {
    UploadLimits::default()
}

/// Upload limit flags (each also a `CANOPY_UPLOAD_*` variable).
#[derive(Debug, Clone, clap::Args)]
pub struct UploadArgs {
    /// Directory where upload bodies are received and processed (default: DATA_DIR/upload-spool).
    #[arg(long, env = "CANOPY_UPLOAD_SPOOL_DIR", value_name = "DIR")]
    pub upload_spool_dir: Option<PathBuf>,
    /// Most disk the upload spool uses at once; uploads beyond it get 503 and Retry-After.
    #[arg(long, env = "CANOPY_UPLOAD_SPOOL_SIZE", value_name = "SIZE", value_parser = parse_byte_size, default_value = "2GiB")]
    pub upload_spool_size: u64,
    /// Uploads parsed and applied in memory at once (each up to 64 MiB of content); the others
    /// wait on disk.
    #[arg(long, env = "CANOPY_UPLOAD_PARALLELISM", value_name = "N", default_value_t = u16::try_from(defaults().parallelism).unwrap_or(2), value_parser = clap::value_parser!(u16).range(1..))]
    pub upload_parallelism: u16,
    /// Open upload sessions per project.
    #[arg(long, env = "CANOPY_UPLOAD_SESSIONS_PER_PROJECT", value_name = "N", default_value_t = defaults().sessions_per_project)]
    pub upload_sessions_per_project: u64,
    /// Bytes the open upload sessions of one project may hold.
    #[arg(long, env = "CANOPY_UPLOAD_SESSION_BYTES_PER_PROJECT", value_name = "SIZE", value_parser = parse_byte_size, default_value = "256MiB")]
    pub upload_session_bytes_per_project: u64,
    /// Open upload sessions in the whole server.
    #[arg(long, env = "CANOPY_UPLOAD_SESSIONS", value_name = "N", default_value_t = defaults().sessions)]
    pub upload_sessions: u64,
    /// Bytes the open upload sessions of the whole server may hold.
    #[arg(long, env = "CANOPY_UPLOAD_SESSION_BYTES", value_name = "SIZE", value_parser = parse_byte_size, default_value = "1GiB")]
    pub upload_session_bytes: u64,
    /// An upload session that receives no file for this long is deleted (15m, 1h, ...).
    #[arg(long, env = "CANOPY_UPLOAD_SESSION_IDLE", value_name = "DURATION", value_parser = duration, default_value = "15m")]
    pub upload_session_idle: Duration,
}

impl UploadArgs {
    /// The server's upload limits.
    pub fn upload_limits(&self) -> UploadLimits {
        UploadLimits {
            spool_dir: self.upload_spool_dir.clone(),
            spool_bytes: self.upload_spool_size,
            parallelism: usize::from(self.upload_parallelism),
            sessions_per_project: self.upload_sessions_per_project,
            session_bytes_per_project: self.upload_session_bytes_per_project,
            sessions: self.upload_sessions,
            session_bytes: self.upload_session_bytes,
            session_idle_timeout: self.upload_session_idle,
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        uploads: super::UploadArgs,
    }

    #[test]
    fn defaults_are_the_servers() {
        let cli = Cli::try_parse_from(["canopy"]).unwrap();
        assert_eq!(
            cli.uploads.upload_limits(),
            canopy_server::app::UploadLimits::default()
        );
        let cli = Cli::try_parse_from([
            "canopy",
            "--upload-session-bytes-per-project",
            "1GiB",
            "--upload-session-idle",
            "90s",
        ])
        .unwrap();
        let limits = cli.uploads.upload_limits();
        assert_eq!(limits.session_bytes_per_project, 1 << 30);
        assert_eq!(limits.session_idle_timeout.as_secs(), 90);
        assert!(Cli::try_parse_from(["canopy", "--upload-parallelism", "0"]).is_err());
    }
}
