//! The SSH communicator (russh): key auth with the bake's temporary key, the host key pinned on
//! first connect for the rest of the bake, bounded connect retries, streamed exec, SFTP upload,
//! keepalives.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBuilder};
use russh::client::{self, Handle};
use russh::keys::{PrivateKey, PrivateKeyWithHashAlg, PublicKey, PublicKeyOrCertificate};
use russh::ChannelMsg;
use russh_sftp::client::SftpSession;
use russh_sftp::protocol::OpenFlags;
use tokio::io::AsyncWriteExt;

use super::{ExecOutput, RemoteError, Stream, MAX_CAPTURE};
use crate::cloud::cancel::Cancel;

/// Keepalive every 15 s, give up after 4 unanswered (a minute): long steps are silent, and a
/// dead instance must not hang the bake until the step timeout.
const KEEPALIVE: Duration = Duration::from_secs(15);
const KEEPALIVE_MAX: usize = 4;
/// One connection attempt (TCP + handshake + auth).
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(20);

/// The SSH connection's socket, acknowledging at once what it reads (TCP_QUICKACK, Linux). sshd
/// writes without TCP_NODELAY for a non-interactive session, and right after authentication it
/// sends two small packets (its host keys, then the answer to the first channel open): Nagle
/// holds the second until the first is acknowledged, and a client that has nothing to send
/// acknowledges only after its delayed-ACK timer (40 ms or more). That was the first command of
/// every connection, waiting on nothing.
struct QuickAck(tokio::net::TcpStream);

impl tokio::io::AsyncRead for QuickAck {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let r = std::pin::Pin::new(&mut self.0).poll_read(cx, buf);
        // The kernel leaves quick-ACK mode on its own after a while: set it after every read.
        #[cfg(target_os = "linux")]
        if let std::task::Poll::Ready(Ok(())) = &r {
            let _ = socket2::SockRef::from(&self.0).set_tcp_quickack(true);
        }
        r
    }
}

impl tokio::io::AsyncWrite for QuickAck {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// Where and as whom to connect.
#[derive(Clone)]
pub struct SshTarget {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub key: Arc<PrivateKey>,
}

impl SshTarget {
    pub fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// The host key of the build instance, pinned by the first successful connect of a bake.
#[derive(Clone, Default)]
pub struct HostKeyPin(Arc<Mutex<Option<PublicKey>>>);

impl HostKeyPin {
    pub fn fingerprint(&self) -> Option<String> {
        let k = self.0.lock().ok()?;
        k.as_ref()
            .map(|k| k.fingerprint(Default::default()).to_string())
    }
}

struct Handler {
    pin: HostKeyPin,
    changed: Arc<Mutex<Option<String>>>,
}

impl client::Handler for Handler {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        // A build instance presents a plain host key; certificates are not expected.
        let PublicKeyOrCertificate::PublicKey { key, .. } = key else {
            return Ok(false);
        };
        let Ok(mut pinned) = self.pin.0.lock() else {
            return Ok(false);
        };
        match &*pinned {
            None => {
                *pinned = Some(key.clone());
                Ok(true)
            }
            Some(p) if p.key_data() == key.key_data() => Ok(true),
            Some(_) => {
                if let Ok(mut c) = self.changed.lock() {
                    *c = Some(key.fingerprint(Default::default()).to_string());
                }
                Ok(false)
            }
        }
    }
}

/// An authenticated SSH session to the build instance.
pub struct Ssh {
    handle: Handle<Handler>,
    addr: String,
}

impl Ssh {
    /// Connects and authenticates, retrying (bounded, jittered) until sshd answers and accepts
    /// the key, within `timeout`. A changed host key is not retried; a refused key is, since an
    /// instance's sshd runs before its key is in place, and is the error when time runs out.
    pub async fn connect(
        target: &SshTarget,
        pin: &HostKeyPin,
        timeout: Duration,
        cancel: &Cancel,
    ) -> Result<Ssh, RemoteError> {
        let started = Instant::now();
        let mut delays = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(200))
            .with_max_delay(Duration::from_secs(5))
            .with_jitter()
            .without_max_times()
            .build();
        let addr = target.addr();
        let mut said = String::new();
        loop {
            let attempt = tokio::time::timeout(ATTEMPT_TIMEOUT, Self::attempt(target, pin));
            let (last, refused) = tokio::select! {
                r = attempt => match r {
                    Ok(Ok(ssh)) => return Ok(ssh),
                    Ok(Err(e @ RemoteError::HostKeyChanged { .. })) => return Err(e),
                    // A refused key is normal while an instance boots: sshd starts before
                    // cloud-init (or the Windows user data) has put the key in place.
                    Ok(Err(e @ RemoteError::Auth { .. })) => (e.to_string(), Some(e)),
                    Ok(Err(e)) => (e.to_string(), None),
                    Err(_) => ("connection attempt timed out".to_string(), None),
                },
                () = cancel.cancelled() => return Err(RemoteError::Cancelled),
            };
            let waited = started.elapsed();
            if waited >= timeout {
                return Err(match refused {
                    Some(e) => e,
                    None => RemoteError::Connect { addr, last, waited },
                });
            }
            if last != said {
                let waiting_for = if refused.is_some() {
                    "the instance to accept the bake's key"
                } else {
                    "sshd to answer"
                };
                tracing::info!(addr = %addr, waiting_for, last = %last, "ssh not ready, retrying");
                said = last;
            }
            let d = delays
                .next()
                .unwrap_or(Duration::from_secs(5))
                .min(timeout - waited);
            tokio::select! {
                () = tokio::time::sleep(d) => {}
                () = cancel.cancelled() => return Err(RemoteError::Cancelled),
            }
        }
    }

    /// One connection attempt within `timeout`, with no retry: for an instance whose address
    /// is known before it was seen running, which is often up already.
    pub async fn try_once(
        target: &SshTarget,
        pin: &HostKeyPin,
        timeout: Duration,
        cancel: &Cancel,
    ) -> Result<Ssh, RemoteError> {
        tokio::select! {
            r = tokio::time::timeout(timeout, Self::attempt(target, pin)) => match r {
                Ok(r) => r,
                Err(_) => Err(RemoteError::Connect {
                    addr: target.addr(),
                    last: "connection attempt timed out".into(),
                    waited: timeout,
                }),
            },
            () = cancel.cancelled() => Err(RemoteError::Cancelled),
        }
    }

    async fn attempt(target: &SshTarget, pin: &HostKeyPin) -> Result<Ssh, RemoteError> {
        let addr = target.addr();
        let config = Arc::new(client::Config {
            keepalive_interval: Some(KEEPALIVE),
            keepalive_max: KEEPALIVE_MAX,
            inactivity_timeout: None,
            ..Default::default()
        });
        let changed = Arc::new(Mutex::new(None));
        let handler = Handler {
            pin: pin.clone(),
            changed: changed.clone(),
        };
        let connect = async {
            let tcp = tokio::net::TcpStream::connect((target.host.as_str(), target.port)).await?;
            // Every exec is a few small packets each way (channel open, exec, data, exit
            // status, close): with Nagle's algorithm each one after the first waits for the
            // peer's delayed ACK (~40 ms on Linux), which is most of a round trip's time. (Set
            // here: `Config::nodelay` applies only to `client::connect`, which makes its own
            // socket.) A socket that refuses it still works, as with `client::connect`.
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::warn!(addr = %addr, error = %e, "cannot set TCP_NODELAY");
            }
            client::connect_stream(config, QuickAck(tcp), handler).await
        };
        let mut handle = match connect.await {
            Ok(h) => h,
            Err(e) => {
                if let Some(seen) = changed.lock().ok().and_then(|c| c.clone()) {
                    return Err(RemoteError::HostKeyChanged {
                        addr,
                        pinned: pin.fingerprint().unwrap_or_default(),
                        seen,
                    });
                }
                return Err(RemoteError::Ssh {
                    op: "connect",
                    addr,
                    message: e.to_string(),
                });
            }
        };
        let key = PrivateKeyWithHashAlg::new(target.key.clone(), None);
        let auth = handle
            .authenticate_publickey(target.user.clone(), key)
            .await
            .map_err(|e| RemoteError::Ssh {
                op: "auth",
                addr: addr.clone(),
                message: e.to_string(),
            })?;
        if !auth.success() {
            return Err(RemoteError::Auth {
                addr,
                user: target.user.clone(),
            });
        }
        Ok(Ssh { handle, addr })
    }

    /// Runs `command` (through the login user's shell), streaming output line by line to
    /// `on_line`; returns the exit status and the captured output.
    pub async fn exec(
        &self,
        command: &str,
        on_line: &mut (dyn FnMut(Stream, &str) + Send),
    ) -> Result<ExecOutput, RemoteError> {
        let mut ch = self
            .handle
            .channel_open_session()
            .await
            .map_err(|e| self.ssh_err("open channel", e))?;
        ch.exec(true, command)
            .await
            .map_err(|e| self.ssh_err("exec", e))?;
        let mut out = ExecOutput::default();
        let (mut partial_out, mut partial_err) = (Vec::new(), Vec::new());
        let mut code = None;
        while let Some(msg) = ch.wait().await {
            match msg {
                ChannelMsg::Data { data } => {
                    lines(&data, &mut partial_out, Stream::Stdout, &mut out, on_line)
                }
                ChannelMsg::ExtendedData { data, ext: 1 } => {
                    lines(&data, &mut partial_err, Stream::Stderr, &mut out, on_line)
                }
                ChannelMsg::ExitStatus { exit_status } => code = Some(exit_status as i32),
                ChannelMsg::ExitSignal { signal_name, .. } => {
                    tracing::warn!(signal = ?signal_name, "remote command killed by a signal");
                    code = Some(128 + 9);
                }
                _ => {}
            }
        }
        flush(&mut partial_out, Stream::Stdout, &mut out, on_line);
        flush(&mut partial_err, Stream::Stderr, &mut out, on_line);
        out.exit_code = code.ok_or_else(|| RemoteError::NoExitStatus {
            command: command
                .lines()
                .next()
                .unwrap_or_default()
                .chars()
                .take(80)
                .collect(),
        })?;
        Ok(out)
    }

    /// Writes `bytes` to `path` over SFTP (missing parent directories are created).
    pub async fn upload(&self, path: &str, bytes: &[u8]) -> Result<(), RemoteError> {
        self.upload_all(&[(path.to_string(), bytes)]).await
    }

    /// Uploads several files in one SFTP session: (remote path, bytes); directories are created.
    pub async fn upload_all(&self, files: &[(String, &[u8])]) -> Result<(), RemoteError> {
        let sftp = self.sftp().await?;
        for (path, bytes) in files {
            let mut dir = String::new();
            let parent = path.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
            for part in parent.split('/').filter(|p| !p.is_empty()) {
                dir.push('/');
                dir.push_str(part);
                if sftp.metadata(&dir).await.is_err() {
                    sftp.create_dir(&dir)
                        .await
                        .map_err(|e| self.sftp_err("mkdir", &dir, e))?;
                }
            }
            let mut f = sftp
                .open_with_flags(
                    path,
                    OpenFlags::CREATE | OpenFlags::TRUNCATE | OpenFlags::WRITE,
                )
                .await
                .map_err(|e| self.sftp_err("open", path, e))?;
            f.write_all(bytes)
                .await
                .map_err(|e| self.sftp_err("write", path, e))?;
            f.shutdown()
                .await
                .map_err(|e| self.sftp_err("close", path, e))?;
        }
        Ok(())
    }

    async fn sftp(&self) -> Result<SftpSession, RemoteError> {
        let ch = self
            .handle
            .channel_open_session()
            .await
            .map_err(|e| self.ssh_err("open channel", e))?;
        ch.request_subsystem(true, "sftp")
            .await
            .map_err(|e| self.ssh_err("sftp subsystem", e))?;
        SftpSession::new(ch.into_stream())
            .await
            .map_err(|e| self.sftp_err("start", "", e))
    }

    pub async fn close(self) {
        let _ = self
            .handle
            .disconnect(russh::Disconnect::ByApplication, "bake done", "en")
            .await;
    }

    fn ssh_err(&self, op: &'static str, e: russh::Error) -> RemoteError {
        RemoteError::Ssh {
            op,
            addr: self.addr.clone(),
            message: e.to_string(),
        }
    }

    fn sftp_err(&self, op: &'static str, path: &str, e: impl std::fmt::Display) -> RemoteError {
        RemoteError::Sftp {
            op,
            path: path.to_string(),
            addr: self.addr.clone(),
            message: e.to_string(),
        }
    }
}

fn keep(buf: &mut String, truncated: &mut bool, line: &str) {
    if buf.len() + line.len() + 1 > MAX_CAPTURE {
        *truncated = true;
        return;
    }
    buf.push_str(line);
    buf.push('\n');
}

fn lines(
    data: &[u8],
    partial: &mut Vec<u8>,
    s: Stream,
    out: &mut ExecOutput,
    on_line: &mut (dyn FnMut(Stream, &str) + Send),
) {
    partial.extend_from_slice(data);
    // Output without newlines must not grow without bound: break it into lines.
    if partial.len() > MAX_CAPTURE && !partial.contains(&b'\n') {
        partial.push(b'\n');
    }
    while let Some(i) = partial.iter().position(|b| *b == b'\n') {
        let line: Vec<u8> = partial.drain(..=i).collect();
        let text = String::from_utf8_lossy(&line[..line.len() - 1]);
        let text = text.trim_end_matches('\r');
        on_line(s, text);
        match s {
            Stream::Stdout => keep(&mut out.stdout, &mut out.truncated, text),
            Stream::Stderr => keep(&mut out.stderr, &mut out.truncated, text),
        }
    }
}

fn flush(
    partial: &mut Vec<u8>,
    s: Stream,
    out: &mut ExecOutput,
    on_line: &mut (dyn FnMut(Stream, &str) + Send),
) {
    if partial.is_empty() {
        return;
    }
    partial.push(b'\n');
    let data = std::mem::take(partial);
    lines(&data, partial, s, out, on_line);
}

/// A new ed25519 key for one bake: the private half never leaves this process.
pub fn new_key() -> Result<PrivateKey, String> {
    PrivateKey::random(&mut rand::rng(), russh::keys::Algorithm::Ed25519).map_err(|e| e.to_string())
}

/// The OpenSSH public form (`ssh-ed25519 AAAA... comment`) for ImportKeyPair.
pub fn public_openssh(key: &PrivateKey, comment: &str) -> Result<String, String> {
    let mut p = key.public_key().clone();
    p.set_comment(comment);
    p.to_openssh().map_err(|e| e.to_string())
}
