//! A minimal QMP (QEMU Machine Protocol) client: one short connection per operation.
//!
//! QEMU's QMP socket serves one client at a time, so holding a connection open would block every
//! other caller (another agent task, an adopting agent); each call here connects, negotiates
//! capabilities, runs its commands and disconnects. Asynchronous events are skipped.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use crate::VmError;

/// How long one QMP exchange may take.
const QMP_TIMEOUT: Duration = Duration::from_secs(5);

pub(crate) struct Qmp {
    name: String,
    reader: BufReader<tokio::net::unix::OwnedReadHalf>,
    writer: tokio::net::unix::OwnedWriteHalf,
}

impl Qmp {
    /// Connects and leaves capabilities negotiation mode.
    pub(crate) async fn connect(name: &str, socket: &Path) -> Result<Qmp, VmError> {
        let err = |detail: String| VmError::Qmp {
            name: name.to_string(),
            command: "connect".into(),
            detail,
        };
        let stream = tokio::time::timeout(QMP_TIMEOUT, UnixStream::connect(socket))
            .await
            .map_err(|_| err(format!("{} did not accept in time", socket.display())))?
            .map_err(|e| err(format!("{}: {e}", socket.display())))?;
        let (read, writer) = stream.into_split();
        let mut qmp = Qmp {
            name: name.to_string(),
            reader: BufReader::new(read),
            writer,
        };
        let greeting = qmp.read_message("greeting").await?;
        if greeting.get("QMP").is_none() {
            return Err(err(format!("unexpected greeting {greeting}")));
        }
        qmp.execute("qmp_capabilities").await?;
        Ok(qmp)
    }

    /// Runs a command without arguments and returns its `return` value.
    pub(crate) async fn execute(&mut self, command: &str) -> Result<Value, VmError> {
        let name = self.name.clone();
        let err = |detail: String| VmError::Qmp {
            name: name.clone(),
            command: command.to_string(),
            detail,
        };
        let mut line = serde_json::to_vec(&serde_json::json!({ "execute": command }))
            .expect("json serializes");
        line.push(b'\n');
        tokio::time::timeout(QMP_TIMEOUT, self.writer.write_all(&line))
            .await
            .map_err(|_| err("write timed out".into()))?
            .map_err(|e| err(e.to_string()))?;
        loop {
            let message = self.read_message(command).await?;
            if message.get("event").is_some() {
                continue;
            }
            if let Some(ret) = message.get("return") {
                return Ok(ret.clone());
            }
            if let Some(error) = message.get("error") {
                let desc = error["desc"].as_str().unwrap_or("unknown error");
                return Err(err(desc.to_string()));
            }
            return Err(err(format!("unexpected reply {message}")));
        }
    }

    async fn read_message(&mut self, command: &str) -> Result<Value, VmError> {
        let err = |detail: String| VmError::Qmp {
            name: self.name.clone(),
            command: command.to_string(),
            detail,
        };
        let mut line = String::new();
        let n = tokio::time::timeout(QMP_TIMEOUT, self.reader.read_line(&mut line))
            .await
            .map_err(|_| err("no answer in time".into()))?
            .map_err(|e| err(e.to_string()))?;
        if n == 0 {
            return Err(err("connection closed".into()));
        }
        serde_json::from_str(&line).map_err(|e| err(format!("bad JSON {line:?}: {e}")))
    }
}
