//! A TCP proxy in front of PostgreSQL that breaks a connection at a `COMMIT`: what a replica
//! sees when the network drops between sending a commit and hearing its answer.

use std::io::{Read as _, Write as _};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// What the proxy does with the next `COMMIT`s it is told to break.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Break {
    /// Forwards the `COMMIT`, lets the server apply it, then closes both sides before its
    /// answer reaches the client: the write happened, the client does not know.
    AfterCommit,
    /// Closes both sides without forwarding the `COMMIT`: the server rolls back.
    BeforeCommit,
}

/// A proxy on 127.0.0.1 forwarding to `upstream`.
#[derive(Debug)]
pub struct CommitBreaker {
    addr: SocketAddr,
    armed: Arc<AtomicUsize>,
    mode: Arc<AtomicUsize>,
    broken: Arc<AtomicUsize>,
}

/// The simple-protocol query `COMMIT` as the client library sends it ('Q', length, text, NUL).
const COMMIT: &[u8] = b"Q\0\0\0\x0bCOMMIT\0";

impl CommitBreaker {
    /// Starts the proxy (one thread accepting, two per connection).
    ///
    /// # Errors
    /// If it cannot bind a port.
    pub fn start(upstream: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let armed = Arc::new(AtomicUsize::new(0));
        let mode = Arc::new(AtomicUsize::new(0));
        let broken = Arc::new(AtomicUsize::new(0));
        let (a, m, b) = (Arc::clone(&armed), Arc::clone(&mode), Arc::clone(&broken));
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = TcpStream::connect(upstream) else {
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let (a, m, b) = (Arc::clone(&a), Arc::clone(&m), Arc::clone(&b));
                let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) else {
                    continue;
                };
                std::thread::spawn(move || copy(s2, c2));
                std::thread::spawn(move || forward(client, server, &a, &m, &b));
            }
        });
        Ok(Self {
            addr,
            armed,
            mode,
            broken,
        })
    }

    /// Where clients connect.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Breaks the next `n` connections that send a `COMMIT`, in `mode`.
    pub fn break_next(&self, n: usize, mode: Break) {
        self.mode.store(
            match mode {
                Break::AfterCommit => 0,
                Break::BeforeCommit => 1,
            },
            Ordering::SeqCst,
        );
        self.armed.store(n, Ordering::SeqCst);
    }

    /// Connections broken so far.
    #[must_use]
    pub fn broken(&self) -> usize {
        self.broken.load(Ordering::SeqCst)
    }
}

/// Server to client, until either side closes.
fn copy(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = [0u8; 16 * 1024];
    while let Ok(n) = from.read(&mut buf) {
        let Some(chunk) = buf.get(..n).filter(|c| !c.is_empty()) else {
            break;
        };
        if to.write_all(chunk).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}

/// Client to server, breaking at an armed `COMMIT`.
fn forward(
    mut client: TcpStream,
    mut server: TcpStream,
    armed: &AtomicUsize,
    mode: &AtomicUsize,
    broken: &AtomicUsize,
) {
    let mut buf = [0u8; 16 * 1024];
    while let Ok(n) = client.read(&mut buf) {
        let Some(chunk) = buf.get(..n).filter(|c| !c.is_empty()) else {
            break;
        };
        let is_commit = chunk.windows(COMMIT.len()).any(|w| w == COMMIT);
        if is_commit
            && armed
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |a| a.checked_sub(1))
                .is_ok()
        {
            // The client's side goes first, so no answer can reach it.
            broken.fetch_add(1, Ordering::SeqCst);
            let _ = client.shutdown(Shutdown::Both);
            if mode.load(Ordering::SeqCst) == 0 {
                let _ = server.write_all(chunk);
                // Let the server apply it.
                std::thread::sleep(Duration::from_millis(300));
            }
            let _ = server.shutdown(Shutdown::Both);
            return;
        }
        if server.write_all(chunk).is_err() {
            break;
        }
    }
    let _ = server.shutdown(Shutdown::Both);
    let _ = client.shutdown(Shutdown::Both);
}
