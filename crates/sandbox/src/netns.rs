//! Network namespaces made by the platform for its environments.
//!
//! Each environment gets a fresh network namespace with only a loopback interface, made here
//! before its sandbox starts: the platform creates the environment's Runtime API listener
//! (`127.0.0.1:9001`) inside that namespace, then the sandbox is started in it (`setns` between
//! fork and exec). The runtime connects straight to the platform's listener, with no relay and
//! no other route: the socket exists only in that one namespace. The namespace belongs to the
//! host's user namespace, so nothing inside the sandbox can reconfigure it.
//!
//! A second listener is bound the same way at [`API_RELAY_ADDR`] (`127.0.0.1:9002`): the
//! platform relays its connections, byte for byte, to its own AWS API (or drops the listener,
//! closing the port, when there is nothing to relay to). These two sockets are the only things
//! that listen in the namespace, and both are served from the host.
//!
//! `unshare`/`setns` of the network namespace act on the calling thread only, so the work is
//! done on one dedicated thread, which also keeps a few namespaces ready ahead of demand.

use std::fs::File;
use std::io;
use std::net::TcpListener;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};

use crate::API_RELAY_ADDR;

/// A network namespace with the Runtime API listener (and the API relay's) already bound inside.
#[derive(Debug)]
pub struct PreparedNetns {
    pub netns: OwnedFd,
    pub listener: TcpListener,
    /// Bound at [`API_RELAY_ADDR`].
    pub relay: TcpListener,
}

struct Shared {
    ready: Mutex<Vec<PreparedNetns>>,
    wanted: Condvar,
    target: usize,
}

/// Makes network namespaces on a dedicated thread, keeping `spare` of them ready.
pub struct NetnsFactory {
    shared: Arc<Shared>,
    direct: Mutex<mpsc::Sender<mpsc::Sender<io::Result<PreparedNetns>>>>,
}

impl NetnsFactory {
    /// Start the factory thread. Fails if this process cannot make network namespaces.
    pub fn start(spare: usize, addr: &'static str) -> io::Result<Self> {
        let shared = Arc::new(Shared { ready: Mutex::new(Vec::new()), wanted: Condvar::new(), target: spare });
        let (tx, rx) = mpsc::channel::<mpsc::Sender<io::Result<PreparedNetns>>>();
        let host = File::open("/proc/thread-self/ns/net")?;
        // Make one now, so a host that cannot do this fails at start-up, not at first invoke.
        let first = make(&host.try_clone()?, addr)?;
        lock(&shared.ready).push(first);
        let s = shared.clone();
        std::thread::Builder::new().name("netns-factory".into()).spawn(move || factory(&s, &rx, &host, addr))?;
        Ok(Self { shared, direct: Mutex::new(tx) })
    }

    /// A ready namespace: a spare one if there is one, else one made now.
    pub fn take(&self) -> io::Result<PreparedNetns> {
        let spare = lock(&self.shared.ready).pop();
        self.shared.wanted.notify_one();
        if let Some(p) = spare {
            return Ok(p);
        }
        let (tx, rx) = mpsc::channel();
        lock(&self.direct).send(tx).map_err(|_| io::Error::other("the netns factory thread is gone"))?;
        rx.recv().map_err(|_| io::Error::other("the netns factory thread is gone"))?
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn factory(s: &Shared, rx: &mpsc::Receiver<mpsc::Sender<io::Result<PreparedNetns>>>, host: &File, addr: &'static str) {
    loop {
        // Direct requests first: someone is waiting.
        while let Ok(reply) = rx.try_recv() {
            let _ = reply.send(make(host, addr));
        }
        let short = lock(&s.ready).len() < s.target;
        if short {
            match make(host, addr) {
                Ok(p) => lock(&s.ready).push(p),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot prepare a network namespace");
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
            }
            continue;
        }
        // Sleep until a spare is taken or a direct request comes (checked every 20 ms).
        let guard = lock(&s.ready);
        let _ = s.wanted.wait_timeout(guard, std::time::Duration::from_millis(20));
    }
}

/// Make a namespace on this thread, set it up, and come back to the host's namespace.
fn make(host: &File, addr: &str) -> io::Result<PreparedNetns> {
    // SAFETY: unshare(CLONE_NEWNET) affects only this thread's network namespace.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let made = (|| {
        loopback_up()?;
        let listener = TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let relay = TcpListener::bind(API_RELAY_ADDR)?;
        relay.set_nonblocking(true)?;
        let netns: OwnedFd = File::open("/proc/thread-self/ns/net")?.into();
        Ok(PreparedNetns { netns, listener, relay })
    })();
    // SAFETY: setns on a namespace fd we hold; it moves only this thread back.
    if unsafe { libc::setns(host.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        // This thread is stranded in another namespace: stop using it.
        let e = io::Error::last_os_error();
        tracing::error!(error = %e, "netns factory cannot return to the host namespace");
        std::process::abort();
    }
    made
}

/// Bring `lo` up in the current network namespace.
fn loopback_up() -> io::Result<()> {
    // SAFETY: a plain socket(2) call; the fd is wrapped in an OwnedFd right away.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a new, valid socket owned by nothing else.
    let sock = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in ifr.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write the ifreq we pass, which lives across
    // both calls; the union member used is ifru_flags, as these requests define.
    unsafe {
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut ifr) != 0 {
            return Err(io::Error::last_os_error());
        }
        ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &ifr) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_are_private_and_have_the_listener() {
        let f = NetnsFactory::start(2, "127.0.0.1:9001").expect("factory (needs root)");
        let a = f.take().expect("a");
        let b = f.take().expect("b");
        let c = f.take().expect("c");
        // Three listeners on the same address: each in its own namespace.
        for p in [&a, &b, &c] {
            assert_eq!(p.listener.local_addr().expect("addr").port(), 9001);
            assert_eq!(p.relay.local_addr().expect("relay addr").port(), 9002);
        }
        // From the host namespace, nothing listens there.
        assert!(std::net::TcpStream::connect("127.0.0.1:9001").is_err());
        assert!(std::net::TcpStream::connect("127.0.0.1:9002").is_err());
        let ino = |p: &PreparedNetns| {
            std::fs::metadata(format!("/proc/self/fd/{}", p.netns.as_raw_fd())).map(|m| {
                use std::os::unix::fs::MetadataExt;
                m.ino()
            })
        };
        let (ia, ib) = (ino(&a).expect("a ino"), ino(&b).expect("b ino"));
        assert_ne!(ia, ib);
    }
}
