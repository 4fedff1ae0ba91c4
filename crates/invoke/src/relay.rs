//! The relay from an environment's `127.0.0.1:9002` to the platform's own AWS API.
//!
//! The listener is made inside the environment's network namespace by the platform (like its
//! Runtime API's) and served here, on the host: each connection is copied byte for byte to the
//! one API address, and to nothing else. The relay, and every connection through it, ends when
//! the environment's [`Relay`] is dropped.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

/// The most connections one environment may have open through its relay at a time (each costs
/// the server two sockets); more are closed as they arrive.
pub const MAX_RELAY_CONNECTIONS: usize = 64;

/// One environment's relay. Dropping it stops it and closes its connections.
pub(crate) struct Relay {
    task: JoinHandle<()>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Relay {
    pub fn start(listener: TcpListener, to: SocketAddr) -> Self {
        let task = tokio::spawn(async move {
            // Owned by this task: aborting it drops (and aborts) every connection.
            let mut conns = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok((stream, _)) => {
                            if conns.len() >= MAX_RELAY_CONNECTIONS {
                                tracing::debug!("relay connection limit reached; connection closed");
                                continue;
                            }
                            conns.spawn(pipe(stream, to));
                        }
                        // Out of descriptors, say: do not spin.
                        Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                    },
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                }
            }
        });
        Self { task }
    }
}

async fn pipe(mut inside: TcpStream, to: SocketAddr) {
    let Ok(Ok(mut api)) = tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(to)).await else {
        return;
    };
    let _ = inside.set_nodelay(true);
    let _ = api.set_nodelay(true);
    let _ = tokio::io::copy_bidirectional(&mut inside, &mut api).await;
}

/// The address to relay to for a server listening on `listen`: an unspecified address
/// (`0.0.0.0`, `::`) is reached on loopback.
pub fn relay_target(listen: SocketAddr) -> SocketAddr {
    let mut to = listen;
    if to.ip().is_unspecified() {
        to.set_ip(match to {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    to
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn relays_bytes_to_the_one_address_and_stops_with_the_environment() {
        // The "API": echoes what it reads, uppercased.
        let api = TcpListener::bind("127.0.0.1:0").await.expect("api");
        let api_addr = api.local_addr().expect("addr");
        tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = api.accept().await else { return };
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 || s.write_all(&buf[..n].to_ascii_uppercase()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        let inside = TcpListener::bind("127.0.0.1:0").await.expect("relay listener");
        let relay_addr = inside.local_addr().expect("addr");
        let relay = Relay::start(inside, api_addr);
        let mut c = TcpStream::connect(relay_addr).await.expect("connect");
        c.write_all(b"hello\x00\xff").await.expect("write");
        let mut got = [0u8; 7];
        c.read_exact(&mut got).await.expect("read");
        assert_eq!(&got, b"HELLO\x00\xff");
        drop(relay);
        tokio::time::sleep(Duration::from_millis(100)).await;
        // The open connection was closed, and nothing listens any more.
        let mut rest = Vec::new();
        let n = tokio::time::timeout(Duration::from_secs(2), c.read_to_end(&mut rest)).await;
        assert!(matches!(n, Ok(Ok(0)) | Ok(Err(_))), "{n:?}");
        assert!(TcpStream::connect(relay_addr).await.is_err());
    }

    #[test]
    fn unspecified_listen_addresses_are_reached_on_loopback() {
        let t = |s: &str| relay_target(s.parse().expect("addr")).to_string();
        assert_eq!(t("0.0.0.0:9000"), "127.0.0.1:9000");
        assert_eq!(t("[::]:9000"), "[::1]:9000");
        assert_eq!(t("10.1.2.3:9000"), "10.1.2.3:9000");
    }
}
