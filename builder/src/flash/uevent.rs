//! Waiting for cards to be inserted: the kernel's uevents on a netlink socket
//! (`NETLINK_KOBJECT_UEVENT`, the kernel's multicast group, `upstream.toml`
//! `[card_events]`). Chosen over `udevadm monitor` (a child process, and no udev in
//! containers or minimal systems) and over rescanning `/sys/block` on a timer (sysfs
//! has no inotify; a timer either lags or storms). An event only says "look again":
//! the caller rescans sysfs, so a lost event (a full socket buffer) costs nothing but
//! the rescan, and a forged one nothing at all.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

/// A socket receiving the kernel's uevents.
#[derive(Debug)]
pub struct Uevents {
    fd: OwnedFd,
}

impl Uevents {
    /// Subscribes to the kernel's uevents.
    pub fn open() -> io::Result<Self> {
        let facts = &crate::upstream::facts().card_events;
        // SAFETY: plain socket(2); the result is checked before it is owned.
        let raw = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_DGRAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                facts.netlink_kobject_uevent,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a descriptor this function just opened and owns alone.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: an all-zero sockaddr_nl is a valid value of the plain C struct.
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        addr.nl_groups = facts.kernel_group;
        // SAFETY: `addr` is a valid sockaddr_nl and its size is passed with it.
        let r = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        // A larger buffer where allowed (root); lost events only cost a rescan anyway.
        let size: libc::c_int = 1 << 20;
        // SAFETY: setsockopt with a pointer to a live c_int and its size.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUFFORCE,
                (&size as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
        Ok(Self { fd })
    }

    /// Waits up to `timeout` for events and reads every one pending. True when one
    /// was about a block device (or some were lost): time to rescan the disks.
    pub fn wait(&self, timeout: Duration) -> io::Result<bool> {
        let mut pfd = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = timeout.as_millis().min(i32::MAX as u128) as libc::c_int;
        // SAFETY: poll on one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, ms) };
        if n < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::Interrupted {
                Ok(false)
            } else {
                Err(e)
            };
        }
        let mut block = false;
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            // SAFETY: recv into a live buffer of the length given.
            let got = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            if got < 0 {
                let e = io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::EAGAIN) => break,
                    Some(libc::EINTR) => continue,
                    // The buffer overflowed: events were lost, rescan.
                    Some(libc::ENOBUFS) => {
                        block = true;
                        continue;
                    }
                    _ => return Err(e),
                }
            }
            block |= is_block_event(&buf[..got as usize]);
        }
        Ok(block)
    }
}

/// True for a uevent (`ACTION@DEVPATH\0KEY=VALUE\0...`) of the block subsystem.
fn is_block_event(msg: &[u8]) -> bool {
    msg.split(|&b| b == 0).any(|f| f == b"SUBSYSTEM=block")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_events_are_recognised() {
        let msg =
            b"change@/devices/virtual/block/loop0\0ACTION=change\0SUBSYSTEM=block\0DEVNAME=loop0\0";
        assert!(is_block_event(msg));
        assert!(!is_block_event(
            b"add@/devices/x\0ACTION=add\0SUBSYSTEM=usb\0"
        ));
    }
}
