//! Redis, through a minimal RESP2 client written here over a blocking `TcpStream` (the `redis` crate
//! would bring an async runtime's worth of compile time for three commands).
//!
//! The data set is loaded with pipelined `SET`s. Lookups are `GET`s of random keys. A worker drives
//! one or more connections: with one it does blocking round trips, as an application thread would;
//! with several it sends one `GET` on each, then reads each reply, so that every connection has one
//! request in flight, as `redis-benchmark -c` does with its event loop (no pipelining on a
//! connection). See [`MULTI_CONN_LAYOUT`] for how the 50-connection figure is measured.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::dataset::Dataset;
use crate::harness::Op;
use crate::{BenchError, BenchResult};

/// Commands per pipelined batch while loading.
pub const LOAD_BATCH: usize = 1_000;

/// Connections in the "best concurrency" measurement, as in `redis-benchmark`'s default `-c 50`.
pub const MULTI_CONNS: usize = 50;

/// How the [`MULTI_CONNS`] connections are spread: (OS threads, connections per thread).
///
/// Chosen by measuring (`compare --only redis --redis-layouts 50x1,1x50,2x25,5x10,10x5,25x2`, three
/// runs on the shared 2-core machine, Redis 7.0 single-threaded, 100,000 keys): 2 threads of 25
/// connections gave Redis its best number (160-176k GET/s), 1 thread of 50 about the same or a little
/// less (136-166k), and more threads steadily less, down to 50 threads each blocking on one
/// connection (96-116k), which spend the client's core on context switches. For reference,
/// `redis-benchmark -t get -c 50 -d 160` gave 116k GET/s on the same machine.
pub const MULTI_CONN_LAYOUT: (usize, usize) = (2, 25);

/// A reply from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `+OK` and other simple strings.
    Simple(String),
    /// `-ERR ...`: the server refused the command.
    Error(String),
    /// `:n`.
    Integer(i64),
    /// `$n` bulk string, `None` for the null bulk string (a missing key).
    Bulk(Option<Vec<u8>>),
    /// `*n` array, `None` for the null array.
    Array(Option<Vec<Reply>>),
}

/// One RESP2 connection.
#[derive(Debug)]
pub struct Connection {
    writer: TcpStream,
    reader: BufReader<TcpStream>,
    out: Vec<u8>,
    line: Vec<u8>,
}

impl Connection {
    /// Connects to `addr`, with Nagle's algorithm off (each request is one small write).
    pub fn connect(addr: SocketAddr) -> BenchResult<Self> {
        let writer = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        writer.set_nodelay(true)?;
        let reader = BufReader::with_capacity(64 * 1024, writer.try_clone()?);
        Ok(Self {
            writer,
            reader,
            out: Vec::with_capacity(4096),
            line: Vec::with_capacity(64),
        })
    }

    /// Appends a command to the send buffer, encoded as a RESP array of bulk strings.
    pub fn queue(&mut self, args: &[&[u8]]) {
        push_header(&mut self.out, b'*', args.len());
        for arg in args {
            push_header(&mut self.out, b'$', arg.len());
            self.out.extend_from_slice(arg);
            self.out.extend_from_slice(b"\r\n");
        }
    }

    /// Sends everything queued.
    pub fn flush(&mut self) -> BenchResult<()> {
        self.writer.write_all(&self.out)?;
        self.out.clear();
        Ok(())
    }

    /// Reads one reply.
    pub fn read_reply(&mut self) -> BenchResult<Reply> {
        self.line.clear();
        let n = self.reader.read_until(b'\n', &mut self.line)?;
        let line = self
            .line
            .get(..n.saturating_sub(2))
            .filter(|_| n >= 3 && self.line.ends_with(b"\r\n"))
            .ok_or("redis: connection closed or malformed reply")?;
        let (&kind, rest) = line.split_first().ok_or("redis: empty reply line")?;
        let text = std::str::from_utf8(rest)?.to_owned();
        match kind {
            b'+' => Ok(Reply::Simple(text)),
            b'-' => Ok(Reply::Error(text)),
            b':' => Ok(Reply::Integer(text.parse()?)),
            b'$' => {
                let len: i64 = text.parse()?;
                let Ok(len) = usize::try_from(len) else {
                    return Ok(Reply::Bulk(None));
                };
                let mut buf = vec![0; len + 2];
                self.reader.read_exact(&mut buf)?;
                buf.truncate(len);
                Ok(Reply::Bulk(Some(buf)))
            }
            b'*' => {
                let len: i64 = text.parse()?;
                let Ok(len) = usize::try_from(len) else {
                    return Ok(Reply::Array(None));
                };
                let items = (0..len)
                    .map(|_| self.read_reply())
                    .collect::<BenchResult<_>>()?;
                Ok(Reply::Array(Some(items)))
            }
            other => Err(format!("redis: unknown reply type {:?}", char::from(other)).into()),
        }
    }

    /// Sends one command and reads its reply; a server error becomes an `Err`.
    pub fn command(&mut self, args: &[&[u8]]) -> BenchResult<Reply> {
        self.queue(args);
        self.flush()?;
        match self.read_reply()? {
            Reply::Error(e) => Err(format!("redis: {e}").into()),
            reply => Ok(reply),
        }
    }
}

/// Appends `<kind><n>\r\n`.
fn push_header(out: &mut Vec<u8>, kind: u8, n: usize) {
    out.push(kind);
    out.extend_from_slice(n.to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Loads the data set with pipelined `SET`s, [`LOAD_BATCH`] per round trip, then checks the count.
pub fn load(addr: SocketAddr, data: &Dataset) -> BenchResult<()> {
    let mut conn = Connection::connect(addr)?;
    conn.command(&[b"FLUSHALL"])?;
    let mut value = Vec::with_capacity(data.value_size());
    for (chunk_no, chunk) in data.keys().chunks(LOAD_BATCH).enumerate() {
        for (j, key) in chunk.iter().enumerate() {
            data.fill_value(chunk_no * LOAD_BATCH + j, &mut value);
            conn.queue(&[b"SET", key.as_slice(), value.as_slice()]);
        }
        conn.flush()?;
        for _ in chunk {
            if let Reply::Error(e) = conn.read_reply()? {
                return Err(format!("redis: SET refused: {e}").into());
            }
        }
    }
    match conn.command(&[b"DBSIZE"])? {
        Reply::Integer(n) if usize::try_from(n).ok() == Some(data.len()) => Ok(()),
        other => Err(format!(
            "redis: DBSIZE is {other:?} after loading {} keys",
            data.len()
        )
        .into()),
    }
}

/// A `GET` worker over `conns` connections: each call sends one `GET` of a random key on every
/// connection, then reads every reply, and counts `conns` operations. Its latency sample is the time
/// of the whole call: an upper bound of each request's time in flight.
pub fn get_worker<'a>(addr: SocketAddr, data: &'a Dataset, conns: usize) -> BenchResult<Op<'a>> {
    let mut conns: Vec<Connection> = (0..conns.max(1))
        .map(|_| Connection::connect(addr))
        .collect::<BenchResult<_>>()?;
    let ops = u32::try_from(conns.len())?;
    Ok(Box::new(move |rng| {
        for conn in conns.iter_mut() {
            conn.queue(&[b"GET", data.random_key(rng).as_slice()]);
            conn.flush()?;
        }
        for conn in conns.iter_mut() {
            match conn.read_reply()? {
                Reply::Bulk(Some(v)) => {
                    std::hint::black_box(v.len());
                }
                other => {
                    return Err(BenchError::from(format!(
                        "redis: GET of a loaded key answered {other:?}"
                    )));
                }
            }
        }
        Ok(ops)
    }))
}
