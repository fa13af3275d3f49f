//! Tunnels from users to this edge's workloads (VNC, serial console, logs), always opened by the
//! agent, outbound: the control plane asks for one ([`canopy_proto::TunnelRequest`]), the driver
//! opens the local end ([`crate::Converger::open_tunnel`] gives a [`TunnelIo`]), and the agent
//! connects it to the control plane and copies bytes until either side closes.

use std::pin::Pin;

use bytes::Bytes;
use futures::Stream;
use tokio::io::{AsyncRead, AsyncWrite};

/// Something that reads and writes bytes (a TCP or Unix socket to VNC or a serial console).
pub trait TunnelDuplex: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> TunnelDuplex for T {}

/// The local end of a tunnel, as the driver opened it.
pub enum TunnelIo {
    /// Bytes both ways (VNC, serial console).
    Duplex(Box<dyn TunnelDuplex>),
    /// Bytes from the edge only (logs); the tunnel ends when the stream does.
    Source(Pin<Box<dyn Stream<Item = std::io::Result<Bytes>> + Send>>),
}

impl std::fmt::Debug for TunnelIo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TunnelIo::Duplex(_) => f.write_str("TunnelIo::Duplex"),
            TunnelIo::Source(_) => f.write_str("TunnelIo::Source"),
        }
    }
}
