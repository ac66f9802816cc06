//! `SOCK_SEQPACKET` unix sockets carrying one message per datagram, with file
//! descriptors passed alongside (`SCM_RIGHTS`), as CRIU's swrk RPC uses them.

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::sys::socket::{
    AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags, Shutdown, SockFlag, SockType,
};

/// How many descriptors one received datagram may carry. CRIU sends at most one
/// (with `orphan-pts-master`); the room beyond that keeps a misbehaving peer from
/// truncating the control data, which would leave received fds unaccounted for.
const MAX_FDS_PER_MESSAGE: usize = 16;

/// One received datagram.
#[derive(Debug)]
pub struct Datagram {
    /// The payload, exactly as long as the datagram was.
    pub data: Vec<u8>,
    /// The descriptors that came with it, owned (and close-on-exec) in this process.
    pub fds: Vec<OwnedFd>,
}

/// Creates a connected `AF_UNIX`/`SOCK_SEQPACKET` pair, both ends close-on-exec.
///
/// The process that calls this is the peer CRIU sees through `SO_PEERCRED`, so it
/// must be the one holding `images_dir_fd` and `work_dir_fd`.
pub fn seqpacket_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(nix::sys::socket::socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )?)
}

/// Sends `data` as one datagram, with `fds` attached when there are any.
pub fn send(sock: BorrowedFd<'_>, data: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    let raw: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
    let rights = [ControlMessage::ScmRights(&raw)];
    let cmsgs: &[ControlMessage<'_>] = if raw.is_empty() { &[] } else { &rights };
    let iov = [IoSlice::new(data)];
    let sent = retry_eintr(|| {
        nix::sys::socket::sendmsg::<()>(sock.as_raw_fd(), &iov, cmsgs, MsgFlags::MSG_NOSIGNAL, None)
    })?;
    if sent != data.len() {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            format!("sent {sent} of {} bytes", data.len()),
        ));
    }
    Ok(())
}

/// Receives one datagram of whatever size, or `None` when the peer closed its end.
///
/// The size is learnt first with `MSG_PEEK|MSG_TRUNC`, so no message is ever
/// truncated by a buffer guessed too small.
pub fn recv(sock: BorrowedFd<'_>) -> io::Result<Option<Datagram>> {
    let fd = sock.as_raw_fd();
    let size = retry_eintr(|| {
        nix::sys::socket::recv(fd, &mut [], MsgFlags::MSG_PEEK | MsgFlags::MSG_TRUNC)
    })?;
    if size == 0 {
        // A closed SEQPACKET peer reads as a zero-length datagram; CRIU never
        // sends an empty one.
        return Ok(None);
    }

    let mut data = vec![0u8; size];
    let mut control = nix::cmsg_space!([RawFd; MAX_FDS_PER_MESSAGE]);
    let (bytes, flags, raw_fds) = {
        let mut iov = [IoSliceMut::new(&mut data)];
        let msg = loop {
            match nix::sys::socket::recvmsg::<()>(
                fd,
                &mut iov,
                Some(&mut control),
                MsgFlags::MSG_CMSG_CLOEXEC,
            ) {
                Err(Errno::EINTR) => continue,
                other => break other?,
            }
        };
        let mut raw_fds = Vec::new();
        if let Ok(cmsgs) = msg.cmsgs() {
            for cmsg in cmsgs {
                if let ControlMessageOwned::ScmRights(fds) = cmsg {
                    raw_fds.extend(fds);
                }
            }
        }
        (msg.bytes, msg.flags, raw_fds)
    };
    let fds = raw_fds
        .into_iter()
        .map(|raw| {
            // SAFETY: the kernel installed `raw` in this process's fd table while
            // receiving this very datagram; nothing else knows the number yet, so
            // this is its only owner.
            unsafe { OwnedFd::from_raw_fd(raw) }
        })
        .collect::<Vec<_>>();

    if flags.contains(MsgFlags::MSG_CTRUNC) {
        return Err(io::Error::other(format!(
            "a datagram carried more than {MAX_FDS_PER_MESSAGE} file descriptors"
        )));
    }
    if bytes == 0 {
        return Ok(None);
    }
    data.truncate(bytes);
    Ok(Some(Datagram { data, fds }))
}

/// Shuts down the sending direction, so the peer reads end-of-file.
pub fn shutdown_write(sock: BorrowedFd<'_>) -> io::Result<()> {
    Ok(nix::sys::socket::shutdown(
        sock.as_fd().as_raw_fd(),
        Shutdown::Write,
    )?)
}

fn retry_eintr<T>(mut call: impl FnMut() -> nix::Result<T>) -> io::Result<T> {
    loop {
        match call() {
            Err(Errno::EINTR) => continue,
            other => return other.map_err(io::Error::from),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::fs::File;
    use std::io::{Read, Seek, Write};
    use std::os::fd::AsFd;

    use super::*;

    #[test]
    fn datagrams_keep_their_boundaries_and_size() {
        let (a, b) = seqpacket_pair().unwrap();
        let big = vec![7u8; 200_000];
        send(a.as_fd(), b"one", &[]).unwrap();
        send(a.as_fd(), &big, &[]).unwrap();
        let first = recv(b.as_fd()).unwrap().unwrap();
        assert_eq!(first.data, b"one");
        assert!(first.fds.is_empty());
        let second = recv(b.as_fd()).unwrap().unwrap();
        assert_eq!(second.data.len(), big.len());
    }

    #[test]
    fn passes_file_descriptors() {
        let (a, b) = seqpacket_pair().unwrap();
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(b"shared").unwrap();
        send(a.as_fd(), b"x", &[file.as_fd()]).unwrap();
        let got = recv(b.as_fd()).unwrap().unwrap();
        assert_eq!(got.fds.len(), 1);
        let mut received = File::from(got.fds.into_iter().next().unwrap());
        received.rewind().unwrap();
        let mut text = String::new();
        received.read_to_string(&mut text).unwrap();
        assert_eq!(text, "shared");
    }

    #[test]
    fn closed_peer_reads_as_none() {
        let (a, b) = seqpacket_pair().unwrap();
        drop(a);
        assert!(recv(b.as_fd()).unwrap().is_none());
    }

    #[test]
    fn shutdown_write_ends_the_stream() {
        let (a, b) = seqpacket_pair().unwrap();
        shutdown_write(a.as_fd()).unwrap();
        assert!(recv(b.as_fd()).unwrap().is_none());
    }
}
