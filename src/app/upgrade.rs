//! Binary upgrade, the old process's side: start the new binary, hand it the listening sockets
//! ([`super::handover`]), and once it says it serves, tell the server loop to stop accepting and
//! drain. Until then nothing changes here: a new process that fails (a bad config, a crash, no
//! answer within [`CHILD_TIMEOUT`]) is logged and stopped, and this one keeps serving.

use std::ffi::OsString;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::net::{UnixListener, UnixStream};
use tokio::process::{Child, Command};
use tokio::sync::watch;

use super::handover::{self, Role, SOCKET_ENV};

/// How long the new process has to take the listeners and start serving.
pub const CHILD_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a new process that failed is given to exit after being killed.
const REAP_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    #[error("an upgrade is already under way")]
    InProgress,
    #[error("this process has handed its listeners over already")]
    Done,
    #[error("not serving yet: no listeners to hand over")]
    NotServing,
    #[error("cannot duplicate a listener: {0}")]
    Duplicate(#[source] io::Error),
    #[error("cannot prepare the handover socket in {path}: {source}")]
    Socket {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot start the new process {program}: {source}")]
    Spawn {
        program: String,
        #[source]
        source: io::Error,
    },
    #[error("the new process (pid {pid}) failed, this one keeps serving: {reason}; it {ended}")]
    Child {
        pid: u32,
        reason: String,
        ended: String,
    },
    #[error("cannot signal pid {pid}: {source}")]
    Signal {
        pid: i32,
        #[source]
        source: io::Error,
    },
}

/// The binary this process was started from and its arguments, as they were at start. Read
/// then because `/proc/self/exe` names the old, deleted file once the binary is replaced; the
/// path is kept as given (made absolute, symlinks left alone), so a replaced file or a moved
/// symlink is what the upgrade starts.
#[derive(Debug, Clone)]
pub struct Program {
    path: PathBuf,
    args: Vec<OsString>,
}

impl Program {
    pub fn current() -> io::Result<Program> {
        let mut args = std::env::args_os();
        let argv0 = args.next().map(PathBuf::from).unwrap_or_default();
        let path = if argv0.components().count() > 1 {
            std::path::absolute(&argv0)?
        } else {
            // Found through PATH: look it up the same way, once, now.
            find_in_path(&argv0).map_or_else(std::env::current_exe, Ok)?
        };
        Ok(Program {
            path,
            args: args.collect(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn find_in_path(name: &Path) -> Option<PathBuf> {
    let dirs = std::env::var_os("PATH")?;
    std::env::split_paths(&dirs)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// Shared by the server loop and whoever triggers an upgrade (SIGUSR2 in `main`).
#[derive(Debug)]
pub struct Upgrade {
    /// Duplicates of the bound listeners, kept while the server loop accepts.
    listeners: Mutex<Vec<(Role, OwnedFd)>>,
    busy: AtomicBool,
    /// Becomes true once the new process serves: the server loop stops accepting.
    handed_over: watch::Sender<bool>,
}

impl Default for Upgrade {
    fn default() -> Upgrade {
        Upgrade {
            listeners: Mutex::default(),
            busy: AtomicBool::new(false),
            handed_over: watch::Sender::new(false),
        }
    }
}

impl Upgrade {
    /// Called by the server loop once it serves: these are what an upgrade hands over.
    pub(super) fn offer(&self, listeners: Vec<(Role, OwnedFd)>) {
        *self.listeners.lock().unwrap_or_else(|p| p.into_inner()) = listeners;
    }

    /// Called by the server loop when it stops accepting: a listener kept open past that would
    /// leave newcomers queued where nobody accepts, instead of refused.
    pub(super) fn withdraw(&self) {
        self.listeners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    /// Completes once a new process has taken over.
    pub(super) async fn handed_over(&self) {
        let mut done = self.handed_over.subscribe();
        // The sender lives in `self`, so the wait ends only by the flag.
        let _ = done.wait_for(|done| *done).await;
    }

    /// Starts `program` as the new alb and hands it the listeners. On success (the new process
    /// serves) returns its pid, and the server loop drains; on failure nothing has changed.
    pub async fn start(&self, program: &Program) -> Result<u32, UpgradeError> {
        if *self.handed_over.borrow() {
            return Err(UpgradeError::Done);
        }
        if self.busy.swap(true, Ordering::AcqRel) {
            return Err(UpgradeError::InProgress);
        }
        let result = self.hand_over(program).await;
        if result.is_ok() {
            self.handed_over.send_replace(true);
        }
        self.busy.store(false, Ordering::Release);
        result
    }

    async fn hand_over(&self, program: &Program) -> Result<u32, UpgradeError> {
        let listeners = self.duplicates()?;
        let dir = PrivateDir::create()?;
        let path = dir.0.join("handover.sock");
        let unix = UnixListener::bind(&path).map_err(|source| UpgradeError::Socket {
            path: dir.0.display().to_string(),
            source,
        })?;
        let mut child = Command::new(&program.path)
            .args(&program.args)
            .env(SOCKET_ENV, &path)
            .stdin(Stdio::null())
            .spawn()
            .map_err(|source| UpgradeError::Spawn {
                program: program.path.display().to_string(),
                source,
            })?;
        let pid = child.id().unwrap_or(0);
        tracing::info!(
            pid,
            program = %program.path.display(),
            "upgrade: started the new process; handing over the listeners"
        );
        let exchange = exchange(&unix, &mut child, pid, &listeners);
        let reason = match tokio::time::timeout(CHILD_TIMEOUT, exchange).await {
            Ok(Ok(())) => return Ok(pid),
            Ok(Err(reason)) => reason,
            Err(_) => format!("no report of serving within {CHILD_TIMEOUT:?}"),
        };
        let ended = reap(&mut child).await;
        Err(UpgradeError::Child { pid, reason, ended })
    }

    fn duplicates(&self) -> Result<Vec<(Role, OwnedFd)>, UpgradeError> {
        let listeners = self.listeners.lock().unwrap_or_else(|p| p.into_inner());
        if listeners.is_empty() {
            return Err(UpgradeError::NotServing);
        }
        listeners
            .iter()
            .map(|(role, fd)| Ok((*role, fd.as_fd().try_clone_to_owned()?)))
            .collect::<io::Result<_>>()
            .map_err(UpgradeError::Duplicate)
    }
}

/// Waits for the child to connect, sends the listeners, waits for its report. A child that
/// exits first ends the wait at once. The error is a reason for the log.
async fn exchange(
    unix: &UnixListener,
    child: &mut Child,
    pid: u32,
    listeners: &[(Role, OwnedFd)],
) -> Result<(), String> {
    let mut stream = tokio::select! {
        accepted = unix.accept() => accepted.map_err(|e| format!("handover socket: {e}"))?.0,
        _ = child.wait() => return Err("it exited before taking the listeners".to_string()),
    };
    check_peer(&stream, pid)?;
    handover::send_listeners(&mut stream, listeners)
        .await
        .map_err(|e| e.to_string())?;
    tokio::select! {
        said = handover::read_serving(&mut stream) => match said {
            Ok(Some(_)) => Ok(()),
            Ok(None) => Err("it hung up without serving".to_string()),
            Err(e) => Err(e.to_string()),
        },
        _ = child.wait() => Err("it exited before serving".to_string()),
    }
}

/// Only the child started for this upgrade may take the listeners. The directory is private
/// already; this also rules out another process of the same user finding the socket.
fn check_peer(stream: &UnixStream, pid: u32) -> Result<(), String> {
    let peer = rustix::net::sockopt::socket_peercred(stream)
        .map_err(|e| format!("cannot identify the peer on the handover socket: {e}"))?;
    let peer_pid = peer.pid.as_raw_nonzero().get();
    if u32::try_from(peer_pid).ok() != Some(pid) || peer.uid != rustix::process::getuid() {
        return Err(format!(
            "pid {peer_pid} connected to the handover socket instead"
        ));
    }
    Ok(())
}

/// Makes sure a failed child is gone, and says how it ended.
async fn reap(child: &mut Child) -> String {
    if let Ok(Some(status)) = child.try_wait() {
        return format!("ended with {status}");
    }
    let _ = child.start_kill();
    match tokio::time::timeout(REAP_TIMEOUT, child.wait()).await {
        Ok(Ok(status)) => format!("was stopped ({status})"),
        Ok(Err(e)) => format!("was stopped (cannot read its status: {e})"),
        Err(_) => "did not exit after SIGKILL".to_string(),
    }
}

/// A directory only this user can enter, holding the handover socket; removed on drop.
struct PrivateDir(PathBuf);

impl PrivateDir {
    fn create() -> Result<PrivateDir, UpgradeError> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let path =
            std::env::temp_dir().join(format!("alb-upgrade-{}-{nanos:09}", std::process::id()));
        // `create`, not `create_all`: a directory that exists already (someone else's) fails.
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .map_err(|source| UpgradeError::Socket {
                path: path.display().to_string(),
                source,
            })?;
        Ok(PrivateDir(path))
    }
}

impl Drop for PrivateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `alb upgrade --pid N`: asks the alb with that pid to upgrade (SIGUSR2).
pub fn request(pid: i32) -> Result<(), UpgradeError> {
    let target = rustix::process::Pid::from_raw(pid).ok_or(UpgradeError::Signal {
        pid,
        source: io::Error::from(io::ErrorKind::InvalidInput),
    })?;
    rustix::process::kill_process(target, rustix::process::Signal::USR2).map_err(|e| {
        UpgradeError::Signal {
            pid,
            source: e.into(),
        }
    })
}

/// Whether the process `pid` still exists (a zombie counts until reaped; another user's too).
pub fn is_running(pid: i32) -> bool {
    rustix::process::Pid::from_raw(pid).is_some_and(|pid| {
        !matches!(
            rustix::process::test_kill_process(pid),
            Err(rustix::io::Errno::SRCH)
        )
    })
}
