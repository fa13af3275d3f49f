//! `canopy vm ...`: power actions on a virtual machine and its consoles.
//!
//! Actions are recorded by the server and carried to the edge with its desired state, so they
//! apply when the edge is next in touch (even after a lost connection); the command says so
//! rather than waiting.
//!
//! Consoles come from the edge through the control plane as WebSockets. `console` makes the
//! VNC display a plain local TCP port, because VNC viewers speak RFB over TCP, not WebSockets:
//! each connection to the port opens its own WebSocket and bytes are copied both ways. The port
//! is a free one the system picks unless `--listen` names one: 5900, the usual VNC port, is
//! where QEMU itself serves the first VM's display when the edge is this machine.
//! `console --serial` puts the serial console in the terminal (raw mode when standard input is
//! a terminal; `Ctrl-]` detaches, as in telnet and virsh).

use std::io::{self, Write};
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use canopy_client::{Client, EdgeWorkload, VmAction, WebSocket, WebSocketMessage};
use clap::{Args, Subcommand};
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use super::Ctx;
use super::workload::{Done, Scope, find_vm};

/// The byte that ends a serial console session typed at a terminal (`Ctrl-]`).
pub const DETACH_KEY: u8 = 0x1d;
/// How long to wait for the server to finish closing after the local side ended.
const CLOSE_GRACE: Duration = Duration::from_secs(2);
/// Bytes read from a local connection at once.
const CHUNK: usize = 64 * 1024;

#[derive(Debug, Subcommand)]
pub enum VmCommand {
    /// Start a stopped virtual machine.
    Start(Target),
    /// Stop a virtual machine (it stays stopped until started, across edge restarts).
    Stop(Target),
    /// Restart a virtual machine (starts it when stopped).
    Restart(Target),
    /// Open a VM's console: its VNC display on a local port for any VNC viewer (until
    /// Ctrl-C), or with --serial its serial console in this terminal.
    Console(ConsoleArgs),
}

/// A VM by name (or id), where it runs when the name alone is ambiguous.
#[derive(Debug, Args)]
pub struct Target {
    /// The VM's name in its template, or its id (see `canopy workload list`).
    pub vm: String,
    #[command(flatten)]
    pub scope: Scope,
}

#[derive(Debug, Args)]
pub struct ConsoleArgs {
    #[command(flatten)]
    pub target: Target,
    /// Local address (or just the port, on 127.0.0.1) the VNC display is served on; by default
    /// a free port on 127.0.0.1, printed as `vnc://127.0.0.1:PORT`.
    #[arg(
        long,
        value_name = "ADDR|PORT",
        value_parser = parse_listen,
        conflicts_with = "serial"
    )]
    pub listen: Option<SocketAddr>,
    /// The serial console in this terminal instead (standard input to the VM, the VM's output
    /// to standard output; Ctrl-] detaches when standard input is a terminal).
    #[arg(long)]
    pub serial: bool,
}

pub async fn run(cmd: VmCommand, ctx: &mut Ctx<'_>) -> anyhow::Result<()> {
    let (target, action) = match cmd {
        VmCommand::Start(t) => (t, VmAction::Start),
        VmCommand::Stop(t) => (t, VmAction::Stop),
        VmCommand::Restart(t) => (t, VmAction::Restart),
        VmCommand::Console(args) => return console(args, ctx).await,
    };
    let vm = find_vm(ctx, &target.vm, &target.scope).await?;
    ctx.client
        .vm_action(&vm.app_id, &vm.edge_id, &vm.workload.id, action)
        .await?;
    let verb = match action {
        VmAction::Start => "starting",
        VmAction::Stop => "stopping",
        VmAction::Restart => "restarting",
    };
    ctx.print_item(&Done::new(action.as_str(), &vm), || {
        format!(
            "{verb} virtual machine {} (app {}) on edge {} (deployment {}); the edge applies it \
             when next in touch",
            vm.workload.name, vm.app, vm.edge_name, vm.deployment_name
        )
    })
}

async fn console(args: ConsoleArgs, ctx: &mut Ctx<'_>) -> anyhow::Result<()> {
    let vm = find_vm(ctx, &args.target.vm, &args.target.scope).await?;
    if args.serial {
        return serial(ctx, &vm).await;
    }
    // Ask once before listening, so "no VNC display" and access errors come at once.
    ctx.client
        .vm_vnc_address(&vm.app_id, &vm.edge_id, &vm.workload.id)
        .await?;
    let listener = bind_console(args.listen).await?;
    let addr = listener.local_addr()?;
    writeln!(
        ctx.out,
        "VNC console of virtual machine {} on edge {}: open vnc://{addr} (host {}, port {}) with \
         a VNC viewer; Ctrl-C stops",
        vm.workload.name,
        vm.edge_name,
        addr.ip(),
        addr.port()
    )?;
    ctx.out.flush()?;
    let client = ctx.client.clone();
    let err = &mut *ctx.err;
    serve_vnc(
        listener,
        client,
        vm,
        async {
            let _ = tokio::signal::ctrl_c().await;
        },
        err,
    )
    .await
}

/// Where `--listen` is parsed from: `ADDR:PORT`, or a port alone (on 127.0.0.1).
fn parse_listen(value: &str) -> Result<SocketAddr, String> {
    if let Ok(port) = value.parse::<u16>() {
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    value.parse().map_err(|_| {
        format!("{value:?} is neither ADDR:PORT (such as 127.0.0.1:5901) nor a port number")
    })
}

/// The console's local listener: on `listen` when given (an error naming the address when it is
/// taken), else on a free port of 127.0.0.1.
pub async fn bind_console(listen: Option<SocketAddr>) -> anyhow::Result<TcpListener> {
    let Some(addr) = listen else {
        return TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0))
            .await
            .context("cannot listen on a free port of 127.0.0.1");
    };
    TcpListener::bind(addr).await.map_err(|e| {
        if e.kind() == io::ErrorKind::AddrInUse {
            anyhow::anyhow!(
                "--listen {addr}: port {} is already in use on {} (by a VNC server such as \
                 QEMU's own, or another console); give another port, or leave --listen out to \
                 get a free one",
                addr.port(),
                addr.ip()
            )
        } else {
            anyhow::Error::new(e).context(format!("--listen {addr}: cannot listen there"))
        }
    })
}

/// Serves the VM's VNC display on `listener` until `stop`: every connection gets its own
/// WebSocket. A connection that fails is reported on `err` and the others go on.
pub async fn serve_vnc(
    listener: TcpListener,
    client: Client,
    vm: EdgeWorkload,
    stop: impl Future<Output = ()>,
    err: &mut (dyn Write + Send),
) -> anyhow::Result<()> {
    let (report, mut reports) = mpsc::unbounded_channel::<String>();
    let mut tasks = tokio::task::JoinSet::new();
    let mut stop = std::pin::pin!(stop);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (tcp, peer) = accepted.context("cannot accept a VNC connection")?;
                let (client, vm, report) = (client.clone(), vm.clone(), report.clone());
                tasks.spawn(async move {
                    let ws = client.open_vnc(&vm.app_id, &vm.edge_id, &vm.workload.id).await;
                    let outcome = match ws {
                        Ok(ws) => relay(ws, tcp).await.map_err(anyhow::Error::from),
                        Err(e) => Err(e.into()),
                    };
                    if let Err(e) = outcome {
                        let _ = report.send(format!(
                            "error: VNC connection from {peer}: {}",
                            super::chain_message(&e)
                        ));
                    }
                });
            }
            Some(line) = reports.recv() => {
                writeln!(err, "{line}")?;
            }
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            () = &mut stop => break,
        }
    }
    tasks.shutdown().await;
    while let Ok(line) = reports.try_recv() {
        writeln!(err, "{line}")?;
    }
    Ok(())
}

/// Copies `io`'s bytes to binary messages and messages' bytes to `io` until either side
/// closes. Returns the bytes copied (to the WebSocket, from it).
pub async fn relay<IO>(mut ws: WebSocket, io: IO) -> io::Result<(u64, u64)>
where
    IO: AsyncRead + AsyncWrite,
{
    let (mut rd, mut wr) = tokio::io::split(io);
    let mut buf = vec![0u8; CHUNK];
    let (mut sent, mut received) = (0u64, 0u64);
    loop {
        tokio::select! {
            n = rd.read(&mut buf) => {
                let n = n?;
                if n == 0 {
                    close(&mut ws).await;
                    break;
                }
                ws.send(WebSocketMessage::Binary(Bytes::copy_from_slice(&buf[..n])))
                    .await
                    .map_err(io::Error::other)?;
                sent += n as u64;
            }
            msg = ws.next() => match msg {
                Some(Ok(WebSocketMessage::Binary(b))) => {
                    wr.write_all(&b).await?;
                    wr.flush().await?;
                    received += b.len() as u64;
                }
                Some(Ok(WebSocketMessage::Text(t))) => {
                    wr.write_all(t.as_bytes()).await?;
                    wr.flush().await?;
                    received += t.len() as u64;
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(io::Error::other(e)),
                None => break,
            },
        }
    }
    let _ = wr.shutdown().await;
    Ok((sent, received))
}

/// Closes the WebSocket, waiting briefly for the server's close.
async fn close(ws: &mut WebSocket) {
    let _ = ws.close(None).await;
    let _ = tokio::time::timeout(CLOSE_GRACE, async {
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
}

/// What ended a serial session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SerialEnd {
    /// The console closed (the VM stopped, the server or edge went away).
    Closed,
    /// Standard input ended.
    InputEnded,
    /// The detach key was typed.
    Detached,
}

async fn serial(ctx: &mut Ctx<'_>, vm: &EdgeWorkload) -> anyhow::Result<()> {
    let ws = ctx
        .client
        .open_vm_serial(&vm.app_id, &vm.edge_id, &vm.workload.id)
        .await?;
    let raw = terminal::RawMode::enable_on_stdin()?;
    let detach = raw.is_some();
    writeln!(
        ctx.err,
        "connected to the serial console of virtual machine {} on edge {}{}\r",
        vm.workload.name,
        vm.edge_name,
        if detach { " (Ctrl-] detaches)" } else { "" }
    )?;
    let end = relay_serial(ws, read_stdin(), ctx.out, detach).await;
    drop(raw);
    let end = end?;
    let why = match end {
        SerialEnd::Closed => "the console closed",
        SerialEnd::InputEnded => "standard input ended",
        SerialEnd::Detached => "detached",
    };
    writeln!(ctx.err, "\r\n{why}")?;
    Ok(())
}

/// Standard input as chunks, read on a thread of its own (a blocking read cannot be cancelled,
/// and a runtime's blocking pool would wait for it at exit). The channel closes at end of input.
fn read_stdin() -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel(16);
    std::thread::spawn(move || {
        let mut stdin = io::stdin().lock();
        let mut buf = vec![0u8; 4096];
        loop {
            match io::Read::read(&mut stdin, &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx.blocking_send(buf[..n].to_vec()).is_err() {
                        break;
                    }
                }
            }
        }
    });
    rx
}

/// Relays a serial console: `input` chunks to the WebSocket, its messages to `out`, until the
/// console closes or the input ends (or, with `detach`, [`DETACH_KEY`] is typed).
pub async fn relay_serial(
    mut ws: WebSocket,
    mut input: mpsc::Receiver<Vec<u8>>,
    out: &mut (dyn Write + Send),
    detach: bool,
) -> anyhow::Result<SerialEnd> {
    loop {
        tokio::select! {
            chunk = input.recv() => {
                let Some(mut chunk) = chunk else {
                    // Show what the input made the guest print before going.
                    let _ = ws.close(None).await;
                    drain(&mut ws, out).await?;
                    return Ok(SerialEnd::InputEnded);
                };
                let detached = detach && {
                    match chunk.iter().position(|b| *b == DETACH_KEY) {
                        Some(at) => {
                            chunk.truncate(at);
                            true
                        }
                        None => false,
                    }
                };
                if !chunk.is_empty() {
                    ws.send(WebSocketMessage::Binary(chunk.into()))
                        .await
                        .context("the serial console closed")?;
                }
                if detached {
                    close(&mut ws).await;
                    return Ok(SerialEnd::Detached);
                }
            }
            msg = ws.next() => match msg {
                Some(Ok(m)) => write_message(out, m)?,
                Some(Err(e)) => return Err(anyhow::Error::new(e).context("the serial console failed")),
                None => return Ok(SerialEnd::Closed),
            },
        }
    }
}

/// Writes what remains until the server closes (at most [`CLOSE_GRACE`]).
async fn drain(ws: &mut WebSocket, out: &mut (dyn Write + Send)) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + CLOSE_GRACE;
    while let Ok(Some(Ok(m))) = tokio::time::timeout_at(deadline, ws.next()).await {
        write_message(out, m)?;
    }
    Ok(())
}

fn write_message(out: &mut (dyn Write + Send), m: WebSocketMessage) -> io::Result<()> {
    match m {
        WebSocketMessage::Binary(b) => out.write_all(&b)?,
        WebSocketMessage::Text(t) => out.write_all(t.as_bytes())?,
        _ => return Ok(()),
    }
    out.flush()
}

/// Raw mode of the terminal on standard input, restored when dropped.
mod terminal {
    use std::io::IsTerminal as _;

    /// The terminal's settings before raw mode.
    pub struct RawMode {
        #[cfg(unix)]
        saved: rustix::termios::Termios,
    }

    impl RawMode {
        /// Raw mode (keys go to the VM as typed, Ctrl-C included) when standard input is a
        /// terminal; `None` when it is a pipe or a file.
        pub fn enable_on_stdin() -> std::io::Result<Option<RawMode>> {
            if !std::io::stdin().is_terminal() {
                return Ok(None);
            }
            #[cfg(unix)]
            {
                use rustix::termios::{OptionalActions, tcgetattr, tcsetattr};
                let stdin = std::io::stdin();
                let saved = tcgetattr(&stdin)?;
                let mut raw = saved.clone();
                raw.make_raw();
                tcsetattr(&stdin, OptionalActions::Now, &raw)?;
                Ok(Some(RawMode { saved }))
            }
            #[cfg(not(unix))]
            Ok(None)
        }
    }

    impl Drop for RawMode {
        fn drop(&mut self) {
            #[cfg(unix)]
            {
                let stdin = std::io::stdin();
                let _ = rustix::termios::tcsetattr(
                    &stdin,
                    rustix::termios::OptionalActions::Now,
                    &self.saved,
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_takes_an_address_or_a_port() {
        assert_eq!(parse_listen("5901").unwrap().to_string(), "127.0.0.1:5901");
        assert_eq!(
            parse_listen("0.0.0.0:5902").unwrap().to_string(),
            "0.0.0.0:5902"
        );
        assert_eq!(
            parse_listen("[::1]:5903").unwrap().to_string(),
            "[::1]:5903"
        );
        let err = parse_listen("vnc").unwrap_err();
        assert!(
            err.contains("\"vnc\"") && err.contains("ADDR:PORT"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn the_console_port_is_free_unless_given_and_a_taken_one_is_refused_by_name() {
        let a = bind_console(None).await.unwrap().local_addr().unwrap();
        let b = bind_console(None).await.unwrap().local_addr().unwrap();
        assert!(a.ip().is_loopback() && a.port() != 0, "{a}");
        assert_ne!(a.port(), b.port(), "two consoles at once get two ports");

        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let err = bind_console(Some(addr)).await.unwrap_err().to_string();
        assert!(
            err.contains(&format!("--listen {addr}"))
                && err.contains(&format!("port {} is already in use", addr.port()))
                && err.contains("leave --listen out"),
            "{err}"
        );
        let free = bind_console(Some(SocketAddr::from(([127, 0, 0, 1], 0))))
            .await
            .unwrap();
        assert_ne!(free.local_addr().unwrap().port(), 0);
    }
}
