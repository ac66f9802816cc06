//! The swrk client: runs `criu swrk 3` and exchanges RPC messages with it.
//!
//! runc's transport (`criuSwrk`), rule by rule:
//! - a `SOCK_SEQPACKET` socketpair; CRIU gets the server end at fd 3 and the
//!   caller's inherited files at fds 4, 5, ... (the numbers `inherit_fd` names);
//! - `images_dir_fd` / `work_dir_fd` are numbers in *this* process, which CRIU
//!   opens through `/proc/<peer>/fd/<n>` (the peer being the socketpair's creator);
//! - one request datagram, then a read loop: `success = false` fails with
//!   `criu failed: type <TYPE> errno <N>`, a closed socket with `unexpected EOF`,
//!   a NOTIFY runs the handler and is acked with `notify_success = true`, or, when
//!   the handler fails, is left unacked and the socket closed so CRIU aborts;
//! - the restored PID is the one of the `post-restore` notification;
//! - after the final response the write side is shut down and CRIU reaped; a
//!   failing exit fails the call (except PRE_DUMP).
//!
//! Unlike runc's fixed 40960-byte buffer, each datagram is sized with
//! `MSG_PEEK|MSG_TRUNC` first, so no response is too large.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use podrestore_proto::criu as rpc;
use prost::Message;
use rpc::CriuReqType;

use super::version::CriuVersion;
use super::{CriuError, HandlerError, log};
use crate::sys::{process, socket};

/// The descriptor number CRIU gets the RPC socket at (`criu swrk 3`).
pub const SWRK_FD: i32 = process::FIRST_EXTRA_FD;

/// A notification CRIU sent at one of its action-script points.
#[derive(Debug)]
pub struct Notification {
    /// The script name: `pre-restore`, `setup-namespaces`, `post-restore`,
    /// `orphan-pts-master`, `network-unlock`, `post-dump`, ...
    pub script: String,
    /// The host PID of the root task where the point carries one, else 0.
    pub pid: i32,
    /// Descriptors that came with it (`orphan-pts-master` sends the pty master).
    pub fds: Vec<OwnedFd>,
}

/// What the caller does at CRIU's notifications. Every hook defaults to
/// "nothing to do", which acks.
pub trait NotifyHandler {
    /// Runs once CRIU has started and before the request is sent, with CRIU's
    /// PID and the request's options: runc moves CRIU into the container's
    /// cgroup here and adds `cg_root` entries.
    fn started(
        &mut self,
        _criu_pid: u32,
        _opts: Option<&mut rpc::CriuOpts>,
    ) -> Result<(), HandlerError> {
        Ok(())
    }

    /// Handles one notification. `Ok` acks it; an error leaves it unacked and
    /// closes the channel, which makes CRIU abort (and roll back a restore).
    fn notify(&mut self, _notification: Notification) -> Result<(), HandlerError> {
        Ok(())
    }
}

impl<F> NotifyHandler for F
where
    F: FnMut(Notification) -> Result<(), HandlerError>,
{
    fn notify(&mut self, notification: Notification) -> Result<(), HandlerError> {
        self(notification)
    }
}

/// Acks every notification and does nothing else.
#[derive(Debug, Default, Clone, Copy)]
pub struct IgnoreNotifications;

impl NotifyHandler for IgnoreNotifications {}

/// One DUMP or RESTORE call.
#[derive(Debug, Default)]
pub struct CriuCall<'a> {
    /// The request's options. `images_dir_fd` (and `work_dir_fd`) must be open
    /// in this process for the whole call.
    pub opts: rpc::CriuOpts,
    /// Files CRIU gets at fds 4, 5, ... in this order; `inherit_fd` entries
    /// refer to them by those numbers.
    pub inherit: Vec<BorrowedFd<'a>>,
    /// CRIU's stdin, stdout and stderr; `None` is `/dev/null`. On restore they
    /// become the restored process's stdio (and `inherit_fd` entries 0..2 refer
    /// to them).
    pub stdio: [Option<OwnedFd>; 3],
    /// CRIU's log file, quoted on failure. Without it the client looks for
    /// `log_file` in the work directory (or the images directory).
    pub log_path: Option<PathBuf>,
}

/// The result of a RESTORE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Restored {
    /// The host PID of the restored root task, from the `post-restore`
    /// notification as runc takes it (from the response when notifications were
    /// off).
    pub pid: i32,
}

/// The result of a DUMP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DumpOutcome {
    /// True when this answer comes from a process restored from the dump.
    pub restored: bool,
}

/// What an RPC exchange ended with.
#[derive(Debug)]
pub struct Exchanged {
    /// The final (non-NOTIFY) response.
    pub response: rpc::CriuResp,
    /// The PID the `post-restore` notification carried, if one came.
    pub post_restore_pid: Option<i32>,
}

/// A CRIU binary to run in swrk mode.
#[derive(Debug, Clone)]
pub struct Criu {
    binary: PathBuf,
}

impl Default for Criu {
    /// `criu`, looked up on `PATH` as runc does.
    fn default() -> Self {
        Self::new("criu")
    }
}

impl Criu {
    /// A client for the CRIU binary at `binary` (a bare name is looked up on PATH).
    pub fn new(binary: impl Into<PathBuf>) -> Self {
        Self {
            binary: binary.into(),
        }
    }

    /// The binary this client runs.
    pub fn binary(&self) -> &Path {
        &self.binary
    }

    /// Asks CRIU for its version (VERSION RPC, CRIU >= 3.0).
    pub fn version(&self) -> Result<CriuVersion, CriuError> {
        let request = rpc::CriuReq {
            r#type: CriuReqType::Version.into(),
            ..Default::default()
        };
        let done = self.run(request, &[], empty_stdio(), &mut IgnoreNotifications)?;
        let version = done
            .response
            .version
            .as_ref()
            .ok_or_else(|| CriuError::Protocol(format!("{:?}", done.response)))?;
        CriuVersion::try_from(version)
    }

    /// Asks CRIU which of the `wanted` features the kernel and CRIU support
    /// (FEATURE_CHECK). The request must carry `features`: CRIU reads it
    /// without checking.
    pub fn feature_check(&self, wanted: rpc::CriuFeatures) -> Result<rpc::CriuFeatures, CriuError> {
        let request = rpc::CriuReq {
            r#type: CriuReqType::FeatureCheck.into(),
            features: Some(wanted),
            ..Default::default()
        };
        let done = self.run(request, &[], empty_stdio(), &mut IgnoreNotifications)?;
        Ok(done.response.features.unwrap_or_default())
    }

    /// runc's `checkCriuFeatures`: fails with `criu is missing features: [...]`
    /// naming each wanted feature CRIU answered false for.
    pub fn require_features(&self, wanted: rpc::CriuFeatures) -> Result<(), CriuError> {
        let got = self.feature_check(wanted)?;
        let missing = missing_features(&wanted, &got);
        if missing.is_empty() {
            Ok(())
        } else {
            Err(CriuError::MissingFeatures(missing))
        }
    }

    /// Dumps with `call.opts` (DUMP). Errors carry the quoted CRIU log.
    pub fn dump(
        &self,
        call: CriuCall<'_>,
        handler: &mut dyn NotifyHandler,
    ) -> Result<DumpOutcome, CriuError> {
        let done = self.run_logged(CriuReqType::Dump, call, handler)?;
        Ok(DumpOutcome {
            restored: done.response.dump.and_then(|d| d.restored).unwrap_or(false),
        })
    }

    /// Restores with `call.opts` (RESTORE) and returns the restored root PID.
    /// Errors carry the quoted CRIU log.
    pub fn restore(
        &self,
        call: CriuCall<'_>,
        handler: &mut dyn NotifyHandler,
    ) -> Result<Restored, CriuError> {
        let done = self.run_logged(CriuReqType::Restore, call, handler)?;
        let pid = done
            .post_restore_pid
            .or_else(|| done.response.restore.as_ref().map(|r| r.pid))
            .ok_or_else(|| CriuError::Protocol(format!("{:?}", done.response)))?;
        Ok(Restored { pid })
    }

    fn run_logged(
        &self,
        kind: CriuReqType,
        call: CriuCall<'_>,
        handler: &mut dyn NotifyHandler,
    ) -> Result<Exchanged, CriuError> {
        let log_path = call
            .log_path
            .clone()
            .or_else(|| default_log_path(&call.opts));
        let request = rpc::CriuReq {
            r#type: kind.into(),
            opts: Some(call.opts),
            ..Default::default()
        };
        self.run(request, &call.inherit, call.stdio, handler)
            .map_err(|err| match (&err, log_path) {
                (CriuError::Spawn { .. }, _) | (_, None) => err,
                (_, Some(path)) => {
                    let quote = log::quote_file(&path);
                    if quote.is_empty() {
                        err
                    } else {
                        CriuError::WithLog {
                            error: Box::new(err),
                            log: quote,
                        }
                    }
                }
            })
    }

    /// Starts `criu swrk 3` with `inherit` at fds 4.., runs one request and reaps
    /// CRIU.
    fn run(
        &self,
        mut request: rpc::CriuReq,
        inherit: &[BorrowedFd<'_>],
        stdio: [Option<OwnedFd>; 3],
        handler: &mut dyn NotifyHandler,
    ) -> Result<Exchanged, CriuError> {
        let (client, server) = socket::seqpacket_pair()?;
        let mut command = Command::new(&self.binary);
        command.arg("swrk").arg(SWRK_FD.to_string());
        let [stdin, stdout, stderr] = stdio;
        command
            .stdin(stdin.map_or_else(Stdio::null, Stdio::from))
            .stdout(stdout.map_or_else(Stdio::null, Stdio::from))
            .stderr(stderr.map_or_else(Stdio::null, Stdio::from));
        let mut files = Vec::with_capacity(inherit.len() + 1);
        files.push(server.as_fd());
        files.extend_from_slice(inherit);
        let mut child = process::spawn(command, &files).map_err(|cause| CriuError::Spawn {
            binary: self.binary.clone(),
            cause,
        })?;
        // Command keeps copies of the stdio fds until it is dropped (inside
        // spawn); the server end must go too, so CRIU's exit reads as EOF here.
        drop(server);
        tracing::debug!(
            criu_pid = child.id(),
            kind = request.r#type,
            "criu swrk started"
        );

        let result = handler
            .started(child.id(), request.opts.as_mut())
            .map_err(CriuError::Handler)
            .and_then(|()| exchange(client.as_fd(), &request, handler));
        match result {
            Ok(done) => {
                // CRIU exits after its answer unless keep_open was asked for.
                if let Err(err) = socket::shutdown_write(client.as_fd()) {
                    tracing::debug!("shutdown of the criu socket: {err}");
                }
                drop(client);
                let status = child.wait()?;
                if !status.success() && request.r#type != i32::from(CriuReqType::PreDump) {
                    return Err(CriuError::Exit(status));
                }
                Ok(done)
            }
            Err(err) => {
                // Closing the socket is how CRIU learns the client gave up; it
                // then aborts and exits.
                drop(client);
                match child.wait() {
                    Ok(status) => tracing::debug!(%status, "criu exited after an error"),
                    Err(wait) => tracing::warn!("cannot reap criu: {wait}"),
                }
                Err(err)
            }
        }
    }
}

/// Sends `request` on `sock` and reads until the final response, running
/// `handler` for each notification and acking it when the handler succeeds.
///
/// On a handler error the notification is not acked and the error is returned;
/// the caller closes the socket. A response with `success = false` fails with
/// `criu failed: type <TYPE> errno <N>`.
pub fn exchange(
    sock: BorrowedFd<'_>,
    request: &rpc::CriuReq,
    handler: &mut dyn NotifyHandler,
) -> Result<Exchanged, CriuError> {
    socket::send(sock, &request.encode_to_vec(), &[])?;
    let mut post_restore_pid = None;
    loop {
        let Some(datagram) = socket::recv(sock)? else {
            return Err(CriuError::UnexpectedEof);
        };
        let response = rpc::CriuResp::decode(datagram.data.as_slice())
            .map_err(|err| CriuError::Protocol(format!("({err})")))?;
        if !response.success {
            return Err(CriuError::Failed {
                kind: type_name(response.r#type),
                errno: response.cr_errno.unwrap_or(0),
                message: response.cr_errmsg.clone(),
            });
        }
        if response.r#type == i32::from(CriuReqType::Notify) {
            let notify = response.notify.unwrap_or_default();
            let script = notify.script.unwrap_or_default();
            let pid = notify.pid.unwrap_or(0);
            tracing::debug!(%script, pid, "criu notification");
            if script == "post-restore" {
                post_restore_pid = Some(pid);
            }
            handler
                .notify(Notification {
                    script,
                    pid,
                    fds: datagram.fds,
                })
                .map_err(CriuError::Handler)?;
            let ack = rpc::CriuReq {
                r#type: CriuReqType::Notify.into(),
                notify_success: Some(true),
                ..Default::default()
            };
            socket::send(sock, &ack.encode_to_vec(), &[])?;
            continue;
        }
        if response.r#type != request.r#type {
            return Err(CriuError::Protocol(format!("{response:?}")));
        }
        return Ok(Exchanged {
            response,
            post_restore_pid,
        });
    }
}

/// The names runc prints for features CRIU lacks.
fn missing_features(wanted: &rpc::CriuFeatures, got: &rpc::CriuFeatures) -> Vec<&'static str> {
    let mut missing = Vec::new();
    let pairs = [
        ("MemTrack", wanted.mem_track, got.mem_track),
        ("LazyPages", wanted.lazy_pages, got.lazy_pages),
        ("PidfdStore", wanted.pidfd_store, got.pidfd_store),
    ];
    for (name, want, have) in pairs {
        // runc only compares features present on both sides.
        if want == Some(true) && have == Some(false) {
            missing.push(name);
        }
    }
    missing
}

fn type_name(kind: i32) -> String {
    CriuReqType::try_from(kind).map_or_else(|_| kind.to_string(), |t| t.as_str_name().to_owned())
}

fn empty_stdio() -> [Option<OwnedFd>; 3] {
    [None, None, None]
}

/// Where CRIU writes `log_file`: the work directory if one was given, else the
/// images directory; both are fds of this process, resolved through /proc.
fn default_log_path(opts: &rpc::CriuOpts) -> Option<PathBuf> {
    let name = opts.log_file.as_deref()?;
    let dir_fd = opts
        .work_dir_fd
        .or(Some(opts.images_dir_fd))
        .filter(|fd| *fd >= 0)?;
    let dir = std::fs::read_link(format!("/proc/self/fd/{dir_fd}")).ok()?;
    Some(dir.join(name))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::fs::File;
    use std::io::{Read, Seek, Write};
    use std::thread;

    use super::*;

    /// The CRIU side of a socketpair, scripted.
    struct Peer {
        sock: OwnedFd,
    }

    impl Peer {
        fn recv_req(&self) -> Option<rpc::CriuReq> {
            socket::recv(self.sock.as_fd())
                .unwrap()
                .map(|d| rpc::CriuReq::decode(d.data.as_slice()).unwrap())
        }
        fn send(&self, resp: &rpc::CriuResp, fds: &[BorrowedFd<'_>]) {
            socket::send(self.sock.as_fd(), &resp.encode_to_vec(), fds).unwrap();
        }
        fn notify(&self, script: &str, pid: Option<i32>) {
            self.send(&notify(script, pid), &[]);
        }
    }

    fn notify(script: &str, pid: Option<i32>) -> rpc::CriuResp {
        rpc::CriuResp {
            r#type: CriuReqType::Notify.into(),
            success: true,
            notify: Some(rpc::CriuNotify {
                script: Some(script.into()),
                pid,
            }),
            ..Default::default()
        }
    }

    fn restore_done(pid: i32) -> rpc::CriuResp {
        rpc::CriuResp {
            r#type: CriuReqType::Restore.into(),
            success: true,
            restore: Some(rpc::CriuRestoreResp { pid }),
            ..Default::default()
        }
    }

    fn restore_req() -> rpc::CriuReq {
        rpc::CriuReq {
            r#type: CriuReqType::Restore.into(),
            opts: Some(rpc::CriuOpts {
                images_dir_fd: 7,
                notify_scripts: Some(true),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn is_ack(req: &rpc::CriuReq) -> bool {
        req.r#type == i32::from(CriuReqType::Notify)
            && req.notify_success == Some(true)
            && req.opts.is_none()
    }

    /// Runs `script` as CRIU on one end and `exchange(request)` on the other.
    fn with_peer<T: Send + 'static>(
        request: rpc::CriuReq,
        handler: &mut dyn NotifyHandler,
        script: impl FnOnce(Peer) -> T + Send + 'static,
    ) -> (Result<Exchanged, CriuError>, T) {
        let (client, server) = socket::seqpacket_pair().unwrap();
        let peer = thread::spawn(move || script(Peer { sock: server }));
        let result = exchange(client.as_fd(), &request, handler);
        // Closing our end is what the real client does after an error.
        drop(client);
        (result, peer.join().unwrap())
    }

    #[test]
    fn restore_round_trip_acks_each_notification_and_takes_post_restore_pid() {
        let mut seen = Vec::new();
        let mut handler = |n: Notification| -> Result<(), HandlerError> {
            seen.push((n.script, n.pid));
            Ok(())
        };
        let (result, acks) = with_peer(restore_req(), &mut handler, |peer| {
            let req = peer.recv_req().unwrap();
            assert_eq!(req.r#type, i32::from(CriuReqType::Restore));
            assert_eq!(req.opts.unwrap().images_dir_fd, 7);
            let mut acks = 0;
            for (script, pid) in [
                ("pre-restore", None),
                ("setup-namespaces", Some(4242)),
                ("post-setup-namespaces", None),
                ("post-restore", Some(4242)),
                ("network-unlock", None),
                ("pre-resume", None),
                ("post-resume", None),
            ] {
                peer.notify(script, pid);
                assert!(is_ack(&peer.recv_req().unwrap()), "{script} not acked");
                acks += 1;
            }
            // The response pid differs on purpose: the notify one wins.
            peer.send(&restore_done(99), &[]);
            // The client sends nothing more; it closes.
            assert!(peer.recv_req().is_none());
            acks
        });
        let done = result.unwrap();
        assert_eq!(acks, 7);
        assert_eq!(done.post_restore_pid, Some(4242));
        assert_eq!(done.response.restore.unwrap().pid, 99);
        assert_eq!(
            seen,
            [
                ("pre-restore".to_string(), 0),
                ("setup-namespaces".to_string(), 4242),
                ("post-setup-namespaces".to_string(), 0),
                ("post-restore".to_string(), 4242),
                ("network-unlock".to_string(), 0),
                ("pre-resume".to_string(), 0),
                ("post-resume".to_string(), 0),
            ]
        );
    }

    #[test]
    fn failing_handler_is_not_acked_and_its_error_returned() {
        let mut handler = |n: Notification| -> Result<(), HandlerError> {
            if n.script == "post-restore" {
                Err("cannot record restored process 4242".into())
            } else {
                Ok(())
            }
        };
        let (result, after) = with_peer(restore_req(), &mut handler, |peer| {
            peer.recv_req().unwrap();
            peer.notify("pre-restore", None);
            assert!(is_ack(&peer.recv_req().unwrap()));
            peer.notify("post-restore", Some(4242));
            // No ack: the next thing CRIU reads is the closed socket.
            peer.recv_req()
        });
        assert!(after.is_none(), "handler failure was acked: {after:?}");
        let err = result.unwrap_err();
        assert!(matches!(err, CriuError::Handler(_)));
        assert_eq!(err.to_string(), "cannot record restored process 4242");
    }

    #[test]
    fn unsuccessful_response_uses_runc_wording() {
        let (result, ()) = with_peer(restore_req(), &mut IgnoreNotifications, |peer| {
            peer.recv_req().unwrap();
            peer.send(
                &rpc::CriuResp {
                    r#type: CriuReqType::Restore.into(),
                    success: false,
                    cr_errno: Some(17),
                    cr_errmsg: Some("Can't fork for 7: File exists".into()),
                    ..Default::default()
                },
                &[],
            );
        });
        let err = result.unwrap_err();
        assert_eq!(err.to_string(), "criu failed: type RESTORE errno 17");
        let CriuError::Failed { message, .. } = err else {
            panic!("wrong variant")
        };
        assert_eq!(message.as_deref(), Some("Can't fork for 7: File exists"));
    }

    #[test]
    fn missing_errno_reads_as_zero() {
        let (result, ()) = with_peer(restore_req(), &mut IgnoreNotifications, |peer| {
            peer.recv_req().unwrap();
            peer.send(
                &rpc::CriuResp {
                    r#type: CriuReqType::Restore.into(),
                    success: false,
                    ..Default::default()
                },
                &[],
            );
        });
        assert_eq!(
            result.unwrap_err().to_string(),
            "criu failed: type RESTORE errno 0"
        );
    }

    #[test]
    fn closed_socket_is_unexpected_eof() {
        let (result, ()) = with_peer(restore_req(), &mut IgnoreNotifications, |peer| {
            peer.recv_req().unwrap();
            peer.notify("pre-restore", None);
            peer.recv_req().unwrap();
            drop(peer);
        });
        assert_eq!(result.unwrap_err().to_string(), "unexpected EOF");
    }

    #[test]
    fn notification_fds_reach_the_handler() {
        let mut got = None;
        let mut handler = |n: Notification| -> Result<(), HandlerError> {
            if n.script == "orphan-pts-master" {
                got = n.fds.into_iter().next();
            }
            Ok(())
        };
        let (result, ()) = with_peer(restore_req(), &mut handler, |peer| {
            peer.recv_req().unwrap();
            let mut file = tempfile::tempfile().unwrap();
            file.write_all(b"pty master").unwrap();
            peer.send(&notify("orphan-pts-master", None), &[file.as_fd()]);
            assert!(is_ack(&peer.recv_req().unwrap()));
            peer.send(&restore_done(1), &[]);
        });
        result.unwrap();
        let mut file = File::from(got.expect("no fd received"));
        file.rewind().unwrap();
        let mut text = String::new();
        file.read_to_string(&mut text).unwrap();
        assert_eq!(text, "pty master");
    }

    #[test]
    fn large_responses_are_read_whole() {
        let big = "x".repeat(100_000);
        let expected = big.clone();
        let (result, ()) = with_peer(restore_req(), &mut IgnoreNotifications, move |peer| {
            peer.recv_req().unwrap();
            peer.send(
                &rpc::CriuResp {
                    r#type: CriuReqType::Restore.into(),
                    success: true,
                    restore: Some(rpc::CriuRestoreResp { pid: 5 }),
                    cr_errmsg: Some(big),
                    ..Default::default()
                },
                &[],
            );
        });
        assert_eq!(result.unwrap().response.cr_errmsg, Some(expected));
    }

    #[test]
    fn response_of_another_type_is_refused() {
        let (result, ()) = with_peer(restore_req(), &mut IgnoreNotifications, |peer| {
            peer.recv_req().unwrap();
            peer.send(
                &rpc::CriuResp {
                    r#type: CriuReqType::Dump.into(),
                    success: true,
                    ..Default::default()
                },
                &[],
            );
        });
        let err = result.unwrap_err().to_string();
        assert!(err.starts_with("unable to parse the response "), "{err}");
    }

    #[test]
    fn garbage_is_a_parse_error() {
        let (result, ()) = with_peer(restore_req(), &mut IgnoreNotifications, |peer| {
            peer.recv_req().unwrap();
            socket::send(peer.sock.as_fd(), &[0xff, 0xff, 0xff], &[]).unwrap();
        });
        let err = result.unwrap_err().to_string();
        assert!(err.starts_with("unable to parse the response "), "{err}");
    }

    #[test]
    fn feature_check_request_carries_features() {
        let wanted = rpc::CriuFeatures {
            mem_track: Some(true),
            lazy_pages: Some(true),
            pidfd_store: None,
        };
        let request = rpc::CriuReq {
            r#type: CriuReqType::FeatureCheck.into(),
            features: Some(wanted),
            ..Default::default()
        };
        let (result, seen) = with_peer(request, &mut IgnoreNotifications, |peer| {
            let req = peer.recv_req().unwrap();
            peer.send(
                &rpc::CriuResp {
                    r#type: CriuReqType::FeatureCheck.into(),
                    success: true,
                    features: Some(rpc::CriuFeatures {
                        mem_track: Some(true),
                        lazy_pages: Some(false),
                        pidfd_store: None,
                    }),
                    ..Default::default()
                },
                &[],
            );
            req.features
        });
        assert_eq!(seen, Some(wanted));
        let got = result.unwrap().response.features.unwrap();
        assert_eq!(missing_features(&wanted, &got), ["LazyPages"]);
        assert_eq!(
            CriuError::MissingFeatures(vec!["MemTrack", "LazyPages"]).to_string(),
            "criu is missing features: [MemTrack LazyPages]"
        );
    }

    #[test]
    fn log_path_defaults_to_the_images_dir() {
        let dir = tempfile::tempdir().unwrap();
        let images = File::open(dir.path()).unwrap();
        let opts = rpc::CriuOpts {
            images_dir_fd: std::os::fd::AsRawFd::as_raw_fd(&images),
            log_file: Some("restore.log".into()),
            ..Default::default()
        };
        assert_eq!(
            default_log_path(&opts),
            Some(dir.path().canonicalize().unwrap().join("restore.log"))
        );
        let none = rpc::CriuOpts {
            log_file: None,
            ..opts
        };
        assert_eq!(default_log_path(&none), None);
    }

    #[test]
    fn missing_binary_is_a_spawn_error() {
        let err = Criu::new("/nonexistent/criu").version().unwrap_err();
        assert!(
            err.to_string()
                .starts_with("cannot start /nonexistent/criu: "),
            "{err}"
        );
    }
}
