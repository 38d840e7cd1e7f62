//! Waking a guard thread that waits in `poll(2)`, so that stopping it takes no poll period.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::time::Duration;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

/// An eventfd a stopping owner writes to; the thread polls it beside its own descriptor.
pub struct Wake(OwnedFd);

impl Wake {
    /// A new, unfired wake.
    pub fn new() -> io::Result<Wake> {
        // SAFETY: eventfd takes an initial value and flags and returns a new fd or -1.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a new descriptor owned by nobody else.
        Ok(Wake(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Wakes every poll on this wake, now and later.
    pub fn fire(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a valid local to an eventfd.
        let _ = unsafe { libc::write(self.0.as_raw_fd(), (&raw const one).cast(), 8) };
    }

    /// Waits until `fd` has events or the wake fires, at most `period`. Returns `fd`'s events
    /// and whether the wake fired.
    pub fn wait(&self, fd: BorrowedFd<'_>, period: Duration) -> (PollFlags, bool) {
        let mut fds = [
            PollFd::new(fd, PollFlags::POLLIN),
            PollFd::new(self.0.as_fd(), PollFlags::POLLIN),
        ];
        let timeout = PollTimeout::try_from(period).unwrap_or(PollTimeout::MAX);
        match poll(&mut fds, timeout) {
            Ok(n) if n > 0 => {
                let woke = fds[1]
                    .revents()
                    .is_some_and(|r| r.contains(PollFlags::POLLIN));
                (fds[0].revents().unwrap_or(PollFlags::empty()), woke)
            }
            _ => (PollFlags::empty(), false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn a_fired_wake_ends_the_wait_at_once() {
        let wake = std::sync::Arc::new(Wake::new().expect("eventfd"));
        let (quiet, _keep) = std::os::unix::net::UnixStream::pair().expect("socketpair");
        let w = wake.clone();
        let waiter = std::thread::spawn(move || {
            let started = Instant::now();
            let (_, woke) = w.wait(quiet.as_fd(), Duration::from_secs(10));
            (woke, started.elapsed())
        });
        std::thread::sleep(Duration::from_millis(50));
        wake.fire();
        let (woke, waited) = waiter.join().expect("waiter");
        assert!(woke);
        assert!(waited < Duration::from_secs(5), "waited {waited:?}");
    }
}
