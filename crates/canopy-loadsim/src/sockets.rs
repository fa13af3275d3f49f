//! What the TLS agents' connections carried: the kernel's own per-socket counters
//! (`tcp_info`: bytes and segments each way), read with `ss` (iproute2) for the sockets whose
//! source address is [`crate::config::TLS_AGENT_SOURCE`], once before and once after the idle
//! window. Counting at the socket rather than in the HTTP client sees everything the agent's
//! link would carry: TLS records, HTTP/2 frames and pings, handshakes of new connections.
//!
//! What it cannot see: the bytes a connection closed during the window carried after the first
//! reading (counted in `closed`; a healthy idle fleet closes none), and TCP/IP headers, which
//! are estimated from the segment counts ([`HEADER_BYTES`] each).

use std::collections::HashMap;
use std::net::IpAddr;

use serde::Serialize;

use crate::error::SimError;

/// IPv4 (20) + TCP (20) + the timestamp option (12) a segment carries on the wire.
pub const HEADER_BYTES: u64 = 52;

/// One socket's counters, from the agent's side.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub segs_out: u64,
    pub segs_in: u64,
}

/// The TCP sockets from `source`, by local port.
pub fn sockets_from(source: IpAddr) -> Result<HashMap<u16, Counters>, SimError> {
    let out = std::process::Command::new("ss")
        .args(["-tinH", "src"])
        .arg(source.to_string())
        .output()
        .map_err(|source| SimError::Io {
            what: "running ss (iproute2) to read the TLS agents' socket counters".into(),
            source,
        })?;
    if !out.status.success() {
        return Err(SimError::Check {
            phase: "reading socket counters".into(),
            detail: format!(
                "ss exited with {}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    Ok(parse_ss(&String::from_utf8_lossy(&out.stdout)))
}

/// Parses `ss -tinH` output: a line per socket (state, queues, local and peer address), then
/// indented lines of `key:value` counters.
fn parse_ss(text: &str) -> HashMap<u16, Counters> {
    let mut sockets = HashMap::new();
    let mut current: Option<u16> = None;
    for line in text.lines() {
        if !line.starts_with(char::is_whitespace) {
            current = line
                .split_whitespace()
                .nth(3)
                .and_then(|local| local.rsplit_once(':'))
                .and_then(|(_, port)| port.parse().ok());
            if let Some(port) = current {
                sockets.insert(port, Counters::default());
            }
            continue;
        }
        let Some(c) = current.and_then(|p| sockets.get_mut(&p)) else {
            continue;
        };
        for token in line.split_whitespace() {
            let Some((key, value)) = token.split_once(':') else {
                continue;
            };
            let Ok(value) = value.parse::<u64>() else {
                continue;
            };
            match key {
                "bytes_sent" => c.bytes_sent = value,
                "bytes_received" => c.bytes_received = value,
                "segs_out" => c.segs_out = value,
                "segs_in" => c.segs_in = value,
                _ => {}
            }
        }
    }
    sockets
}

/// The TLS agents' traffic over a window.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Traffic {
    pub agents: usize,
    pub connections_start: usize,
    pub connections_end: usize,
    /// Connections that appeared during the window (a new TCP+TLS handshake each).
    pub opened: usize,
    /// Connections gone by the end of the window.
    pub closed: usize,
    /// TCP payload (TLS records) over the window, all agents, agent → server and back.
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub segments: u64,
    /// Per agent per day, extrapolated from the window: payload only, and with
    /// [`HEADER_BYTES`] per segment.
    pub payload_kib_per_edge_per_day: f64,
    pub wire_kib_per_edge_per_day: f64,
}

impl Traffic {
    /// What the sockets carried between the readings `before` and `after`, `window_seconds`
    /// apart, for `agents` agents.
    pub fn between(
        before: &HashMap<u16, Counters>,
        after: &HashMap<u16, Counters>,
        agents: usize,
        window_seconds: f64,
    ) -> Traffic {
        let mut t = Traffic {
            agents,
            connections_start: before.len(),
            connections_end: after.len(),
            ..Traffic::default()
        };
        for (port, end) in after {
            // A port reused by a new connection would show counters below the first reading:
            // count it as new.
            let start = before
                .get(port)
                .filter(|s| s.bytes_sent <= end.bytes_sent && s.segs_out <= end.segs_out);
            if start.is_none() {
                t.opened += 1;
            }
            let start = start.copied().unwrap_or_default();
            t.bytes_sent += end.bytes_sent - start.bytes_sent;
            t.bytes_received += end.bytes_received.saturating_sub(start.bytes_received);
            t.segments +=
                (end.segs_out - start.segs_out) + end.segs_in.saturating_sub(start.segs_in);
        }
        t.closed = before.keys().filter(|p| !after.contains_key(p)).count();
        if agents > 0 && window_seconds > 0.0 {
            let per_day = 86_400.0 / window_seconds / agents as f64 / 1024.0;
            let payload = (t.bytes_sent + t.bytes_received) as f64;
            t.payload_kib_per_edge_per_day = payload * per_day;
            t.wire_kib_per_edge_per_day = (payload + (t.segments * HEADER_BYTES) as f64) * per_day;
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SS: &str = "ESTAB 0      0      127.0.0.2:51923 127.0.0.1:7070\n\t cubic wscale:7,7 rto:204 rtt:0.1/0.05 mss:32768 bytes_sent:1000 bytes_acked:1001 bytes_received:2000 segs_out:10 segs_in:8 data_segs_out:4 send 1bps\nESTAB 0      0      127.0.0.2:51924 127.0.0.1:7070\n\t cubic bytes_sent:50 bytes_received:70 segs_out:3 segs_in:2\n";

    #[test]
    fn ss_output_is_read_per_socket() {
        let s = parse_ss(SS);
        assert_eq!(s.len(), 2);
        assert_eq!(
            s[&51923],
            Counters {
                bytes_sent: 1000,
                bytes_received: 2000,
                segs_out: 10,
                segs_in: 8
            }
        );
        assert_eq!(s[&51924].bytes_received, 70);
    }

    #[test]
    fn traffic_counts_deltas_new_and_closed_connections() {
        let before = parse_ss(SS);
        let mut after = before.clone();
        after.remove(&51924);
        after.get_mut(&51923).unwrap().bytes_sent = 1_500;
        after.get_mut(&51923).unwrap().segs_out = 12;
        after.insert(
            40000,
            Counters {
                bytes_sent: 100,
                bytes_received: 100,
                segs_out: 1,
                segs_in: 1,
            },
        );
        let t = Traffic::between(&before, &after, 2, 86_400.0);
        assert_eq!((t.opened, t.closed), (1, 1));
        assert_eq!((t.bytes_sent, t.bytes_received, t.segments), (600, 100, 4));
        assert!((t.payload_kib_per_edge_per_day - 700.0 / 2.0 / 1024.0).abs() < 1e-9);
        assert!((t.wire_kib_per_edge_per_day - (700.0 + 4.0 * 52.0) / 2.0 / 1024.0).abs() < 1e-9);
    }
}
