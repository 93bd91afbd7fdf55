//! The lean client's HTTP/1.1 connection: requests are written from bytes prepared before the
//! step, and the response head is parsed in place by `httparse` (hyper's own parser) into a
//! buffer the connection keeps. Only the status code is kept: the body is read and dropped.
//!
//! This is the generator's hot path, so it does less than hyper's client connection (which is
//! still selectable, `LOADGEN_H1=hyper`, to compare): no request or response objects, no header
//! map, no channel between a sender and a connection task, no allocation per request. Measured
//! on the 2-core VM against a one-thread fixed-302 server, closed loop over 32 connections, it
//! cut the generator's user CPU per request by 40-50% (README, "The generator's own
//! limits"). No pipelining: one request at a time per connection, as the schedule sends them.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant, SystemTime};

use tokio::io::{AsyncWriteExt, Interest};
use tokio::net::TcpStream;

use crate::stats::Outcome;

/// A response head larger than this is refused (linkr's are a few hundred bytes).
const MAX_HEAD: usize = 64 * 1024;
const BUFFER: usize = 16 * 1024;

/// Why an exchange failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The connection was closed before the request was taken (the server closed it after the
    /// last response): the request can go on a new connection.
    NotSent,
    Failed(Outcome),
}

/// How the response body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Body {
    Empty,
    Length(u64),
    Chunked,
    UntilClose,
}

/// One HTTP/1.1 connection.
pub struct RawConn {
    stream: TcpStream,
    buf: Box<[u8]>,
    /// Unread bytes are `buf[start..end]`.
    start: usize,
    end: usize,
    /// The server will close the connection after the last response (`Connection: close`, an
    /// HTTP/1.0 answer, or a body delimited by the close).
    closing: bool,
    /// When the last bytes read so far arrived in the socket, by the kernel's receive timestamp
    /// (`SO_TIMESTAMPNS`): what the generator did after that is its own delay.
    arrived: Option<Instant>,
    /// The last read took less than it had room for: the socket was empty after it.
    drained: bool,
    /// recvmsg(2) calls made, those that found nothing included.
    reads: u64,
}

impl RawConn {
    pub async fn open(addr: SocketAddr) -> io::Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        receive_timestamps(stream.as_raw_fd())?;
        Ok(Self {
            stream,
            buf: vec![0; BUFFER].into_boxed_slice(),
            start: 0,
            end: 0,
            closing: false,
            arrived: None,
            drained: false,
            reads: 0,
        })
    }

    /// When the last byte of the last response arrived in the socket (the kernel's receive
    /// timestamp of its segment; None if the kernel gave none).
    pub fn arrived(&self) -> Option<Instant> {
        self.arrived
    }

    /// Whether the connection can take another request: the server has not said it will close
    /// it, and has not closed it (checked by the kernel without blocking, whatever the runtime
    /// last saw: end of stream, or bytes nobody asked for, mean it is gone).
    pub fn alive(&mut self) -> bool {
        if self.closing {
            return false;
        }
        let mut probe = 0u8;
        // SAFETY: recv(2) on an open socket into one byte of live memory.
        let n = unsafe {
            libc::recv(
                self.stream.as_raw_fd(),
                (&mut probe as *mut u8).cast(),
                1,
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::WouldBlock
    }

    /// Whether the server keeps the connection open after the last response.
    pub fn reusable(&self) -> bool {
        !self.closing
    }

    /// Writes `request` (a whole HTTP/1.1 request; `head` if its method is HEAD) and reads the
    /// whole response; its status code.
    pub async fn exchange(&mut self, request: &[u8], head: bool) -> Result<u16, Failure> {
        self.send(request).await?;
        if let Some(pause) = read_pause() {
            std::thread::sleep(pause);
        }
        self.read_response(head).await
    }

    async fn send(&mut self, request: &[u8]) -> Result<(), Failure> {
        self.start = 0;
        self.end = 0;
        self.arrived = None;
        self.stream
            .write_all(request)
            .await
            .map_err(|_| Failure::NotSent)
    }

    async fn read_response(&mut self, head: bool) -> Result<u16, Failure> {
        let (code, body) = loop {
            match self.read_head(head).await {
                Ok(Some(head)) => break head,
                // 1xx: another head follows.
                Ok(None) => continue,
                // Closed before any byte of an answer: the server had closed the connection
                // while it was idle (after a response, or before its first request: servers
                // time out a connection that sends no request head). The caller retries once on
                // a new connection, and counts a second such close as a connect failure.
                Err(Failure::Failed(Outcome::Other)) if self.end == 0 => {
                    return Err(Failure::NotSent);
                }
                Err(e) => return Err(e),
            }
        };
        self.skip_body(body).await?;
        if self.drained && self.start == self.end {
            // The whole response is read and the socket was empty after the last read. The
            // runtime still holds the socket readable (it forgets that only when a read finds
            // nothing), so the next response's first read would be a recvmsg(2) returning
            // EAGAIN: one syscall per request more than wrk makes (README, "One syscall per
            // request less"). Forget it now; the next response's arrival wakes the socket again.
            let _ = self.stream.try_io(Interest::READABLE, || {
                Err::<(), _>(io::ErrorKind::WouldBlock.into())
            });
        }
        Ok(code)
    }

    /// Reads more bytes after `buf[..end]` (moving the unread ones to the front if the buffer is
    /// full); false at the end of the stream.
    async fn fill(&mut self) -> Result<bool, Failure> {
        if self.end == self.buf.len() {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            } else if self.buf.len() < MAX_HEAD {
                let mut bigger = vec![0; MAX_HEAD].into_boxed_slice();
                bigger[..self.end].copy_from_slice(&self.buf[..self.end]);
                self.buf = bigger;
            } else {
                return Err(Failure::Failed(Outcome::Other));
            }
        }
        let fd = self.stream.as_raw_fd();
        let read = loop {
            if self.stream.readable().await.is_err() {
                return Err(Failure::Failed(Outcome::Other));
            }
            let buf = &mut self.buf[self.end..];
            self.reads += 1;
            match self.stream.try_io(Interest::READABLE, || receive(fd, buf)) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                other => break other,
            }
        };
        match read {
            Ok((0, _)) => Ok(false),
            Ok((n, arrived)) => {
                self.drained = self.end + n < self.buf.len();
                self.end += n;
                self.arrived = arrived.or(self.arrived);
                Ok(true)
            }
            Err(_) => Err(Failure::Failed(Outcome::Other)),
        }
    }

    /// The status code and body framing of the next response head (None for a 1xx head,
    /// which is consumed).
    async fn read_head(&mut self, head_request: bool) -> Result<Option<(u16, Body)>, Failure> {
        loop {
            if self.end > self.start {
                let mut headers = [httparse::EMPTY_HEADER; 32];
                let mut response = httparse::Response::new(&mut headers);
                match response.parse(&self.buf[self.start..self.end]) {
                    Ok(httparse::Status::Complete(n)) => {
                        let code = response.code.unwrap_or(0);
                        let (body, closing) = framing(&response, head_request);
                        self.start += n;
                        if (100..200).contains(&code) && code != 101 {
                            return Ok(None);
                        }
                        self.closing = closing || body == Body::UntilClose;
                        return Ok(Some((code, body)));
                    }
                    Ok(httparse::Status::Partial) => {}
                    Err(_) => return Err(Failure::Failed(Outcome::Other)),
                }
            }
            if !self.fill().await? {
                return Err(Failure::Failed(Outcome::Other));
            }
        }
    }

    async fn skip_body(&mut self, body: Body) -> Result<(), Failure> {
        match body {
            Body::Empty => Ok(()),
            Body::Length(n) => self.skip(n).await,
            Body::Chunked => self.skip_chunked().await,
            Body::UntilClose => {
                self.start = self.end;
                while self.fill().await? {
                    self.start = self.end;
                }
                Ok(())
            }
        }
    }

    /// Drops the next `n` bytes of the stream.
    async fn skip(&mut self, mut n: u64) -> Result<(), Failure> {
        loop {
            let here = ((self.end - self.start) as u64).min(n);
            self.start += here as usize;
            n -= here;
            if n == 0 {
                return Ok(());
            }
            self.start = 0;
            self.end = 0;
            if !self.fill().await? {
                return Err(Failure::Failed(Outcome::Other));
            }
        }
    }

    async fn skip_chunked(&mut self) -> Result<(), Failure> {
        loop {
            let size = loop {
                match httparse::parse_chunk_size(&self.buf[self.start..self.end]) {
                    Ok(httparse::Status::Complete((used, size))) => {
                        self.start += used;
                        break size;
                    }
                    Ok(httparse::Status::Partial) => {
                        if !self.fill().await? {
                            return Err(Failure::Failed(Outcome::Other));
                        }
                    }
                    Err(_) => return Err(Failure::Failed(Outcome::Other)),
                }
            };
            if size == 0 {
                return self.skip_trailers().await;
            }
            // The chunk and the CRLF after it.
            self.skip(size + 2).await?;
        }
    }

    /// The trailer section after the last chunk: lines up to an empty one.
    async fn skip_trailers(&mut self) -> Result<(), Failure> {
        loop {
            let unread = &self.buf[self.start..self.end];
            match unread.windows(2).position(|w| w == b"\r\n") {
                Some(0) => {
                    self.start += 2;
                    return Ok(());
                }
                Some(line) => self.start += line + 2,
                None => {
                    if !self.fill().await? {
                        return Err(Failure::Failed(Outcome::Other));
                    }
                }
            }
        }
    }
}

/// A test hook, `LOADGEN_READ_PAUSE_US`: the engine thread blocks this long between writing each
/// request and reading its response, as a generator short of CPU would, so that a test can see
/// what a late read does to the figures (`tests/cli.rs`). Unset in every measurement.
fn read_pause() -> Option<Duration> {
    static PAUSE: std::sync::OnceLock<Option<Duration>> = std::sync::OnceLock::new();
    *PAUSE.get_or_init(|| {
        std::env::var("LOADGEN_READ_PAUSE_US")
            .ok()
            .and_then(|v| v.parse().ok())
            .filter(|&us| us > 0)
            .map(Duration::from_micros)
    })
}

/// Asks the kernel to stamp each received segment with its arrival time.
fn receive_timestamps(fd: RawFd) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: setsockopt(2) on an open socket with a c_int option value.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPNS,
            (&on as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// recvmsg(2) into `buf`, without blocking: the bytes read, and when the last of them arrived
/// (the kernel's `SCM_TIMESTAMPNS`, a wall-clock time, turned into an `Instant` by its distance
/// from the wall clock now).
fn receive(fd: RawFd, buf: &mut [u8]) -> io::Result<(usize, Option<Instant>)> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // Room for one control message carrying a timespec, aligned for cmsghdr.
    let mut control = [0u64; 8];
    // SAFETY: msghdr is plain data; zero is a valid empty value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = size_of_val(&control) as _;
    // SAFETY: msg points at live buffers of the given lengths for the duration of the call.
    let n = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let (now, wall) = (Instant::now(), SystemTime::now());
    let mut arrived = None;
    // SAFETY: the CMSG_* walk stays within msg_controllen bytes of `control`, which recvmsg
    // filled; the timespec is read unaligned.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_TIMESTAMPNS {
                let ts: libc::timespec = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                let stamp = Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32);
                let ago = wall
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .ok()
                    .and_then(|w| w.checked_sub(stamp))
                    .unwrap_or_default();
                arrived = now.checked_sub(ago);
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    Ok((n as usize, arrived))
}

/// The body's framing (RFC 9112 §6.3) and whether the server closes the connection after it.
fn framing(response: &httparse::Response<'_, '_>, head_request: bool) -> (Body, bool) {
    let code = response.code.unwrap_or(0);
    let mut closing = response.version == Some(0);
    let mut length = None;
    let mut chunked = false;
    for h in response.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            length = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok());
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = h
                .value
                .rsplit(|&b| b == b',')
                .next()
                .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if h.name.eq_ignore_ascii_case("connection") {
            for token in h.value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    closing = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    closing = false;
                }
            }
        }
    }
    let body = if head_request || (100..200).contains(&code) || code == 204 || code == 304 {
        Body::Empty
    } else if chunked {
        Body::Chunked
    } else if let Some(n) = length {
        if n == 0 { Body::Empty } else { Body::Length(n) }
    } else {
        Body::UntilClose
    };
    (body, closing)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A server that answers each request (read up to its blank line) with the next of
    /// `answers`, written in pieces of `piece` bytes, then closes the connection.
    async fn server(answers: Vec<&'static [u8]>, piece: usize) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut got = Vec::new();
            for answer in answers {
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    let mut b = [0u8; 512];
                    let n = s.read(&mut b).await.unwrap();
                    if n == 0 {
                        return;
                    }
                    got.extend_from_slice(&b[..n]);
                }
                let end = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
                got.drain(..end);
                for part in answer.chunks(piece) {
                    s.write_all(part).await.unwrap();
                    s.flush().await.unwrap();
                    tokio::task::yield_now().await;
                }
            }
        });
        addr
    }

    const GET: &[u8] = b"GET / HTTP/1.1\r\nhost: t\r\n\r\n";

    #[tokio::test]
    async fn a_response_arrived_when_the_kernel_took_it_not_when_it_was_read() {
        const FOUND: &[u8] = b"HTTP/1.1 302 Found\r\ncontent-length: 0\r\n\r\n";
        const WARM_UP: usize = 5_000;
        const ATTEMPTS: usize = 3;
        let addr = server(vec![FOUND; WARM_UP + ATTEMPTS], 64).await;
        let mut c = RawConn::open(addr).await.unwrap();
        // The kernel turns receive timestamps on for the whole system in a deferred work item
        // once the first socket asks for them, so the first segments may come unstamped; on a
        // busy machine the work item can wait for a CPU for many milliseconds. There is no
        // signal for it but a stamped segment: exchange until one comes (for up to 10 s).
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            assert_eq!(c.exchange(GET, false).await, Ok(302));
            if c.arrived().is_some() {
                break;
            }
            assert!(Instant::now() < deadline, "no receive timestamp in 10 s");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        // The response is in the socket (peeked, not read) while the generator is busy
        // elsewhere for 30 ms. The kernel's wall-clock stamp is turned into an `Instant` by the
        // wall clock at the read, which a clock step in between would move: the first of up to
        // three attempts that is not disturbed by one decides.
        let mut seen = Vec::new();
        for _ in 0..ATTEMPTS {
            let before = Instant::now();
            c.send(GET).await.unwrap();
            c.stream.peek(&mut [0u8; 1]).await.unwrap();
            std::thread::sleep(Duration::from_millis(30));
            let read_at = Instant::now();
            assert_eq!(c.read_response(false).await, Ok(302));
            let arrived = c.arrived().expect("the kernel's receive timestamp");
            // The wall clock and the monotonic one are read µs apart: 1 ms of slack.
            let after_the_send = arrived + Duration::from_millis(1) >= before;
            let waited = read_at.saturating_duration_since(arrived);
            if after_the_send && waited >= Duration::from_millis(29) {
                return;
            }
            seen.push((after_the_send, waited));
        }
        panic!("(arrived after the send, waited in the socket before the read): {seen:?}");
    }

    #[tokio::test]
    async fn a_response_that_comes_later_is_read_with_one_recvmsg() {
        // The server takes 20 ms to answer each request, so the client's first look at the
        // socket always comes before the response: a read made on the runtime's stale
        // readiness from the response before would find nothing.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut b = [0u8; 512];
            while s.read(&mut b).await.unwrap_or(0) > 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
                s.write_all(b"HTTP/1.1 302 Found\r\ncontent-length: 0\r\n\r\n")
                    .await
                    .unwrap();
            }
        });
        let mut c = RawConn::open(addr).await.unwrap();
        assert_eq!(c.exchange(GET, false).await, Ok(302));
        for _ in 0..4 {
            let before = c.reads;
            assert_eq!(c.exchange(GET, false).await, Ok(302));
            assert_eq!(c.reads - before, 1, "recvmsg calls for one response");
        }
        assert!(c.alive());
    }

    #[tokio::test]
    async fn reads_length_chunked_and_empty_bodies_on_one_connection() {
        let addr = server(
            vec![
                b"HTTP/1.1 302 Found\r\nlocation: /x\r\ncontent-length: 5\r\n\r\nhello",
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\nx-t: 1\r\n\r\n",
                b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
                b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n",
            ],
            7,
        )
        .await;
        let mut c = RawConn::open(addr).await.unwrap();
        for want in [302, 200, 204, 404] {
            assert_eq!(c.exchange(GET, false).await, Ok(want));
            assert!(c.reusable());
        }
    }

    #[tokio::test]
    async fn a_body_until_close_and_connection_close_end_reuse() {
        let addr = server(vec![b"HTTP/1.1 200 OK\r\n\r\nall of it"], 4).await;
        let mut c = RawConn::open(addr).await.unwrap();
        assert_eq!(c.exchange(GET, false).await, Ok(200));
        assert!(!c.reusable() && !c.alive());

        let addr = server(
            vec![b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok"],
            64,
        )
        .await;
        let mut c = RawConn::open(addr).await.unwrap();
        assert_eq!(c.exchange(GET, false).await, Ok(200));
        assert!(!c.reusable());
    }

    #[tokio::test]
    async fn alive_asks_the_kernel_not_the_runtime() {
        // A server on its own thread answers once and closes. The runtime is not polled in
        // between (the wait for the close is a blocking poll(2)), so it has not seen the close:
        // alive() must see it for itself.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            use std::io::{Read, Write};
            let (mut s, _) = listener.accept().unwrap();
            let mut b = [0u8; 512];
            let _ = s.read(&mut b).unwrap();
            s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                .unwrap();
        });
        let mut c = RawConn::open(addr).await.unwrap();
        assert_eq!(c.exchange(GET, false).await, Ok(200));
        server.join().unwrap();
        let mut fd = libc::pollfd {
            fd: c.stream.as_raw_fd(),
            events: libc::POLLRDHUP,
            revents: 0,
        };
        // SAFETY: poll(2) on one pollfd of an open socket.
        let ready = unsafe { libc::poll(&mut fd, 1, 10_000) };
        assert_eq!(ready, 1, "the server's close within 10 s");
        assert!(!c.alive());
    }

    #[tokio::test]
    async fn a_connection_closed_after_its_last_response_is_not_sent_on() {
        let addr = server(vec![b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"], 64).await;
        let mut c = RawConn::open(addr).await.unwrap();
        assert_eq!(c.exchange(GET, false).await, Ok(200));
        // The server has closed it: the next request is not this request's failure.
        assert_eq!(c.exchange(GET, false).await, Err(Failure::NotSent));
    }

    #[tokio::test]
    async fn a_connection_closed_before_its_first_request_is_not_sent_on() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut c = RawConn::open(addr).await.unwrap();
        // The server times the idle connection out before any request.
        let (s, _) = listener.accept().await.unwrap();
        drop(s);
        assert_eq!(c.exchange(GET, false).await, Err(Failure::NotSent));
    }

    #[tokio::test]
    async fn garbage_and_a_cut_response_fail() {
        let addr = server(vec![b"NOT HTTP AT ALL\r\n\r\n"], 64).await;
        let mut c = RawConn::open(addr).await.unwrap();
        assert_eq!(
            c.exchange(GET, false).await,
            Err(Failure::Failed(Outcome::Other))
        );
        let addr = server(
            vec![b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort"],
            64,
        )
        .await;
        let mut c = RawConn::open(addr).await.unwrap();
        assert_eq!(
            c.exchange(GET, false).await,
            Err(Failure::Failed(Outcome::Other))
        );
    }

    #[tokio::test]
    async fn a_head_request_has_no_body_whatever_its_length_says() {
        let addr = server(
            vec![
                b"HTTP/1.1 200 OK\r\ncontent-length: 99\r\n\r\n",
                b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\nz",
            ],
            64,
        )
        .await;
        let mut c = RawConn::open(addr).await.unwrap();
        assert_eq!(
            c.exchange(b"HEAD / HTTP/1.1\r\nhost: t\r\n\r\n", true)
                .await,
            Ok(200)
        );
        assert_eq!(c.exchange(GET, false).await, Ok(200));
    }
}
