//! The wire between an old alb and the new one that replaces it (see [`super::upgrade`]): the
//! listening sockets themselves cross a Unix socket as SCM_RIGHTS, so the new process serves the
//! very sockets the old one bound. Nothing is closed or bound again in between, so the kernel
//! never refuses a connection: both processes accept from the same queue while they overlap.
//!
//! The exchange, on one Unix stream the old process listens on:
//! 1. the new process connects (the old one checks, by SO_PEERCRED, that it is the child it
//!    started);
//! 2. the old one sends one line of JSON naming the listeners in order (`client`, `admin`), with
//!    the file descriptors attached in that order;
//! 3. once its server loop accepts, the new one answers `serving <pid>` and hangs up.
//!
//! Everything here is safe code: rustix turns the received descriptors into `OwnedFd`s.

use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::time::Duration;

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, Interest};
use tokio::net::{TcpListener, UnixStream};

/// The environment variable that tells a starting alb where to take its listeners from. An
/// environment variable rather than a flag: the new process is started with the old one's
/// arguments as they are, and it passes on to the next upgrade unchanged.
pub const SOCKET_ENV: &str = "ALB_UPGRADE_SOCKET";
/// At most this many listeners cross (the client listener and the admin listener).
const MAX_LISTENERS: usize = 3;
/// The description line is a few dozen bytes; anything longer is not from an alb.
const MAX_LINE: u64 = 4096;
/// How long the new process waits for the old one to send its listeners.
const RECEIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the new process spends telling the old one it serves.
const REPORT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum HandoverError {
    #[error("cannot reach the old alb on {path}: {source}")]
    Connect {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("handover socket: {0}")]
    Io(#[from] io::Error),
    #[error("no listeners from the old alb within {0:?}")]
    Timeout(Duration),
    #[error("the handover message is not from an alb of this kind: {0}")]
    Protocol(String),
}

/// Which listener a descriptor is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The client listener (`listen`).
    Client,
    /// The admin listener (`admin.listen`).
    Admin,
    /// The TLS listener (`tls.listen`).
    Tls,
}

/// The line that travels with the descriptors.
#[derive(Debug, Serialize, Deserialize)]
struct Description {
    /// The sender's pid, for the logs.
    pid: u32,
    /// One entry per descriptor, in the order they are attached.
    listeners: Vec<Role>,
}

/// Old side: sends `listeners` (duplicates of the bound sockets) to the new process.
pub(super) async fn send_listeners(
    stream: &mut UnixStream,
    listeners: &[(Role, OwnedFd)],
) -> Result<(), HandoverError> {
    if listeners.len() > MAX_LISTENERS {
        return Err(HandoverError::Protocol(format!(
            "{} listeners, at most {MAX_LISTENERS} cross",
            listeners.len()
        )));
    }
    let description = Description {
        pid: std::process::id(),
        listeners: listeners.iter().map(|(role, _)| *role).collect(),
    };
    let mut line = serde_json::to_vec(&description)
        .map_err(|e| HandoverError::Protocol(format!("cannot write the description: {e}")))?;
    line.push(b'\n');
    let fds: Vec<BorrowedFd<'_>> = listeners.iter().map(|(_, fd)| fd.as_fd()).collect();
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_LISTENERS))];
    let sent = stream
        .async_io(Interest::WRITABLE, || {
            let mut control = SendAncillaryBuffer::new(&mut space);
            if !control.push(SendAncillaryMessage::ScmRights(&fds)) {
                return Err(io::Error::other("no room for the descriptors"));
            }
            let sent = rustix::net::sendmsg(
                &*stream,
                &[IoSlice::new(&line)],
                &mut control,
                SendFlags::NOSIGNAL,
            )?;
            Ok(sent)
        })
        .await?;
    // The descriptors went with the first byte; the rest of the line may follow on its own.
    stream.write_all(&line[sent..]).await?;
    stream.flush().await?;
    Ok(())
}

/// Old side: waits for the new process's `serving <pid>` line. `Ok(None)`: it hung up without.
pub(super) async fn read_serving(stream: &mut UnixStream) -> Result<Option<u32>, HandoverError> {
    let mut line = String::new();
    BufReader::new(stream.take(MAX_LINE))
        .read_line(&mut line)
        .await?;
    if line.is_empty() {
        return Ok(None);
    }
    line.trim_end()
        .strip_prefix("serving ")
        .and_then(|pid| pid.parse().ok())
        .map(Some)
        .ok_or_else(|| HandoverError::Protocol(format!("unexpected answer {:?}", line.trim_end())))
}

/// New side: the listeners taken over from the old alb, and the way back to it.
#[derive(Debug)]
pub struct Inherited {
    stream: UnixStream,
    old_pid: u32,
    client: Option<TcpListener>,
    admin: Option<TcpListener>,
    tls: Option<TcpListener>,
}

impl Inherited {
    /// Connects to the old alb at `path` and receives its listeners.
    pub async fn receive(path: &Path) -> Result<Inherited, HandoverError> {
        tokio::time::timeout(RECEIVE_TIMEOUT, Inherited::receive_now(path))
            .await
            .map_err(|_| HandoverError::Timeout(RECEIVE_TIMEOUT))?
    }

    async fn receive_now(path: &Path) -> Result<Inherited, HandoverError> {
        let mut stream =
            UnixStream::connect(path)
                .await
                .map_err(|source| HandoverError::Connect {
                    path: path.display().to_string(),
                    source,
                })?;
        let (mut line, fds) = receive_with_fds(&stream).await?;
        if !line.contains(&b'\n') {
            let mut rest = Vec::new();
            BufReader::new((&mut stream).take(MAX_LINE))
                .read_until(b'\n', &mut rest)
                .await?;
            line.extend_from_slice(&rest);
        }
        let description: Description = serde_json::from_slice(line.trim_ascii_end())
            .map_err(|e| HandoverError::Protocol(format!("bad description: {e}")))?;
        if description.listeners.len() != fds.len() {
            return Err(HandoverError::Protocol(format!(
                "{} listeners named, {} descriptors received",
                description.listeners.len(),
                fds.len()
            )));
        }
        let mut inherited = Inherited {
            stream,
            old_pid: description.pid,
            client: None,
            admin: None,
            tls: None,
        };
        for (role, fd) in description.listeners.into_iter().zip(fds) {
            let listener = Some(listener_from(fd)?);
            match role {
                Role::Client => inherited.client = listener,
                Role::Admin => inherited.admin = listener,
                Role::Tls => inherited.tls = listener,
            }
        }
        Ok(inherited)
    }

    /// The old alb's pid.
    pub fn old_pid(&self) -> u32 {
        self.old_pid
    }

    /// The client listener, if it was handed over and is bound where `configured` says
    /// (port 0 takes any port on that address). A listener that does not fit is dropped: the
    /// new config moved the address, and the caller binds the new one.
    pub(super) fn take_client(&mut self, configured: SocketAddr) -> Option<TcpListener> {
        fitting(self.client.take(), configured, "client")
    }

    /// The TLS listener, on the same terms as [`Inherited::take_client`].
    pub(super) fn take_tls(&mut self, configured: SocketAddr) -> Option<TcpListener> {
        fitting(self.tls.take(), configured, "TLS")
    }

    /// The admin listener, on the same terms as [`Inherited::take_client`].
    pub(super) fn take_admin(&mut self, configured: Option<SocketAddr>) -> Option<TcpListener> {
        let listener = self.admin.take();
        fitting(listener, configured?, "admin")
    }

    /// Tells the old alb that this one serves, so that it stops accepting and drains.
    pub(super) async fn report_serving(self) -> Result<(), HandoverError> {
        let mut stream = self.stream;
        let report = async {
            let line = format!("serving {}\n", std::process::id());
            stream.write_all(line.as_bytes()).await?;
            stream.shutdown().await
        };
        tokio::time::timeout(REPORT_TIMEOUT, report)
            .await
            .map_err(|_| HandoverError::Timeout(REPORT_TIMEOUT))??;
        Ok(())
    }
}

/// One `recvmsg`: the bytes of the first segment and the descriptors attached to it.
async fn receive_with_fds(stream: &UnixStream) -> Result<(Vec<u8>, Vec<OwnedFd>), HandoverError> {
    let mut data = vec![0u8; MAX_LINE as usize];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_LISTENERS))];
    let (received, fds, truncated) = stream
        .async_io(Interest::READABLE, || {
            let mut control = RecvAncillaryBuffer::new(&mut space);
            let message = rustix::net::recvmsg(
                stream,
                &mut [IoSliceMut::new(&mut data)],
                &mut control,
                RecvFlags::CMSG_CLOEXEC,
            )?;
            let mut fds = Vec::new();
            for message in control.drain() {
                if let RecvAncillaryMessage::ScmRights(received) = message {
                    fds.extend(received);
                }
            }
            Ok((
                message.bytes,
                fds,
                message.flags.contains(ReturnFlags::CTRUNC),
            ))
        })
        .await?;
    if truncated {
        return Err(HandoverError::Protocol(
            "more descriptors than expected".into(),
        ));
    }
    if received == 0 {
        return Err(HandoverError::Protocol(
            "the old alb hung up without sending its listeners".into(),
        ));
    }
    data.truncate(received);
    Ok((data, fds))
}

/// A received descriptor as a tokio listener, once it is known to be a listening TCP socket.
fn listener_from(fd: OwnedFd) -> Result<TcpListener, HandoverError> {
    let listening = rustix::net::sockopt::socket_acceptconn(&fd).unwrap_or(false);
    if !listening {
        return Err(HandoverError::Protocol(
            "a descriptor is not a listening socket".into(),
        ));
    }
    let listener = std::net::TcpListener::from(fd);
    listener.set_nonblocking(true)?;
    let listener = TcpListener::from_std(listener)?;
    listener
        .local_addr()
        .map_err(|e| HandoverError::Protocol(format!("a descriptor is not a TCP socket: {e}")))?;
    Ok(listener)
}

fn fitting(
    listener: Option<TcpListener>,
    configured: SocketAddr,
    what: &str,
) -> Option<TcpListener> {
    let listener = listener?;
    let actual = listener.local_addr().ok()?;
    if fits(configured, actual) {
        Some(listener)
    } else {
        tracing::warn!(
            "upgrade: the {what} listener handed over is on {actual}, the config says {configured}: binding {configured}"
        );
        None
    }
}

/// Whether a listener bound to `actual` serves the configured address.
fn fits(configured: SocketAddr, actual: SocketAddr) -> bool {
    configured.ip() == actual.ip() && (configured.port() == 0 || configured.port() == actual.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listener_fits_its_address_or_port_zero() {
        let actual: SocketAddr = "127.0.0.1:4321".parse().unwrap();
        assert!(fits("127.0.0.1:4321".parse().unwrap(), actual));
        assert!(fits("127.0.0.1:0".parse().unwrap(), actual));
        assert!(!fits("127.0.0.1:4322".parse().unwrap(), actual));
        assert!(!fits("0.0.0.0:4321".parse().unwrap(), actual));
    }

    #[tokio::test]
    async fn listeners_cross_a_unix_socket_and_keep_their_queue() {
        let dir = std::env::temp_dir().join(format!("alb-handover-unit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s");
        let unix = tokio::net::UnixListener::bind(&path).unwrap();
        let client = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = client.local_addr().unwrap();
        // A connection queued before the handover is accepted after it, by the receiver.
        let queued = std::net::TcpStream::connect(addr).unwrap();
        let fd = OwnedFd::from(client);
        let sender = tokio::spawn(async move {
            let (mut stream, _) = unix.accept().await.unwrap();
            send_listeners(&mut stream, &[(Role::Client, fd)])
                .await
                .unwrap();
            read_serving(&mut stream).await.unwrap()
        });
        let mut inherited = Inherited::receive(&path).await.unwrap();
        assert_eq!(inherited.old_pid(), std::process::id());
        assert!(inherited.take_admin(Some(addr)).is_none());
        let listener = inherited
            .take_client("127.0.0.1:0".parse().unwrap())
            .unwrap();
        let (_, peer) = listener.accept().await.unwrap();
        assert_eq!(peer, queued.local_addr().unwrap());
        inherited.report_serving().await.unwrap();
        assert_eq!(sender.await.unwrap(), Some(std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
