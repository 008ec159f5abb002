//! A minimal HTTP/1.1 GET over `std::net::TcpStream` with one total deadline for
//! connect, request and response, and a cap on the body. Enough for a metrics endpoint:
//! `Content-Length`, chunked transfer encoding, or a body that ends at close.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

/// A parsed `http://host[:port][/path]` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl {
    /// As written in the URL (an IPv6 address keeps its brackets).
    pub host: String,
    pub port: u16,
    /// Path and query, starting with `/`.
    pub path: String,
}

/// Why a URL is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error(
        "metrics URL {url:?}: only http:// is supported (give e.g. http://127.0.0.1:9090/metrics)"
    )]
    Scheme { url: String },
    #[error("metrics URL {url:?}: {reason} (give e.g. http://127.0.0.1:9090/metrics)")]
    Invalid { url: String, reason: String },
}

impl HttpUrl {
    pub fn parse(url: &str) -> Result<HttpUrl, UrlError> {
        let invalid = |reason: &str| UrlError::Invalid {
            url: url.to_string(),
            reason: reason.to_string(),
        };
        let rest = match url.split_once("://") {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => rest,
            _ => {
                return Err(UrlError::Scheme {
                    url: url.to_string(),
                });
            }
        };
        if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(invalid("it contains a blank or a control character"));
        }
        if url.contains('{') || url.contains('}') {
            return Err(invalid(
                "it contains `{` or `}`; a `{pid}` pattern is expanded per process first",
            ));
        }
        let (authority, path) = match rest.find(['/', '?']) {
            Some(at) => (&rest[..at], &rest[at..]),
            None => (rest, "/"),
        };
        let path = path.split('#').next().unwrap_or("/");
        let path = if path.starts_with('/') {
            path.to_string()
        } else {
            format!("/{path}")
        };
        if authority.contains('@') {
            return Err(invalid("user names and passwords are not supported"));
        }
        let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
            let (address, after) = bracketed
                .split_once(']')
                .ok_or_else(|| invalid("an IPv6 address lacks its closing `]`"))?;
            address
                .parse::<std::net::Ipv6Addr>()
                .map_err(|_| invalid("the bracketed host is not an IPv6 address"))?;
            let port = match after {
                "" => None,
                _ => Some(
                    after
                        .strip_prefix(':')
                        .ok_or_else(|| invalid("expected `:port` after the IPv6 address"))?,
                ),
            };
            (format!("[{address}]"), port)
        } else {
            match authority.rsplit_once(':') {
                Some((host, port)) => (host.to_string(), Some(port)),
                None => (authority.to_string(), None),
            }
        };
        if host.is_empty() {
            return Err(invalid("it has no host"));
        }
        if !host.starts_with('[')
            && !host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_')
        {
            return Err(invalid("the host has characters a host name cannot have"));
        }
        let port = match port {
            None => 80,
            Some(port) => port
                .parse::<u16>()
                .ok()
                .filter(|&p| p != 0)
                .ok_or_else(|| {
                    invalid(&format!("port {port:?} is not a number from 1 to 65535"))
                })?,
        };
        Ok(HttpUrl { host, port, path })
    }

    /// The addresses to connect to. IP literals need no lookup; a host name is resolved
    /// through the system resolver (which may itself take time: resolve once, up front).
    pub fn resolve(&self) -> std::io::Result<Vec<SocketAddr>> {
        let bare = self.host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, self.port)]);
        }
        Ok((bare, self.port).to_socket_addrs()?.collect())
    }
}

/// Why a fetch gave no usable body. The texts are the "unavailable" reasons.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    #[error("connection refused by {address}: is the endpoint up and listening there?")]
    Refused { address: String },
    #[error("no complete response within {} ms ({stage}); the endpoint is too slow or hung", .timeout.as_millis())]
    TimedOut {
        timeout: Duration,
        stage: &'static str,
    },
    #[error("cannot reach {address}: {reason}")]
    Io { address: String, reason: String },
    #[error("too large: body larger than {} bytes (the cap); the endpoint exposes too much", .limit)]
    TooLarge { limit: usize },
    #[error("HTTP status {status} {reason:?}; expected 200")]
    Status { status: u16, reason: String },
    #[error("malformed HTTP response: {0}")]
    Malformed(String),
}

/// The most header bytes accepted before the body.
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// GETs `url` from the first address that accepts, all within `timeout`, and returns
/// the body of a 200 response, at most `max_body` bytes.
pub fn get(
    url: &HttpUrl,
    addresses: &[SocketAddr],
    timeout: Duration,
    max_body: usize,
) -> Result<Vec<u8>, FetchError> {
    let deadline = Instant::now() + timeout;
    let timed_out = |stage| FetchError::TimedOut { timeout, stage };
    let mut last_error = FetchError::Io {
        address: url.host.clone(),
        reason: "the host name resolved to no address".to_string(),
    };
    let mut connected = None;
    for address in addresses {
        let Some(left) = remaining(deadline) else {
            return Err(timed_out("connect"));
        };
        match TcpStream::connect_timeout(address, left) {
            Ok(stream) => {
                connected = Some((stream, address));
                break;
            }
            Err(err) => last_error = io_error(err, address, timeout, "connect"),
        }
    }
    let Some((mut stream, address)) = connected else {
        return Err(last_error);
    };
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}:{}\r\nUser-Agent: tfwatch/{}\r\nAccept: text/plain;version=0.0.4;q=1.0, application/openmetrics-text;version=1.0.0;q=0.5, */*;q=0.1\r\nAccept-Encoding: identity\r\nConnection: close\r\n\r\n",
        url.path,
        url.host,
        url.port,
        env!("CARGO_PKG_VERSION")
    );
    let left = remaining(deadline).ok_or_else(|| timed_out("request"))?;
    stream
        .set_write_timeout(Some(left))
        .and_then(|()| stream.write_all(request.as_bytes()))
        .map_err(|err| io_error(err, address, timeout, "request"))?;

    let mut response = Response::new(max_body);
    let mut buffer = [0_u8; 16 * 1024];
    loop {
        if let Some(body) = response.complete()? {
            return Ok(body);
        }
        let left = remaining(deadline).ok_or_else(|| timed_out("response"))?;
        stream
            .set_read_timeout(Some(left))
            .map_err(|err| io_error(err, address, timeout, "response"))?;
        match stream.read(&mut buffer) {
            Ok(0) => return response.at_close(),
            Ok(n) => response.push(&buffer[..n])?,
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
            Err(err) => return Err(io_error(err, address, timeout, "response")),
        }
    }
}

fn remaining(deadline: Instant) -> Option<Duration> {
    deadline
        .checked_duration_since(Instant::now())
        .filter(|d| !d.is_zero())
}

fn io_error(
    err: std::io::Error,
    address: &SocketAddr,
    timeout: Duration,
    stage: &'static str,
) -> FetchError {
    use std::io::ErrorKind;
    match err.kind() {
        ErrorKind::ConnectionRefused => FetchError::Refused {
            address: address.to_string(),
        },
        ErrorKind::TimedOut | ErrorKind::WouldBlock => FetchError::TimedOut { timeout, stage },
        _ => FetchError::Io {
            address: address.to_string(),
            reason: err.to_string(),
        },
    }
}

/// How the body's end is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Length(usize),
    Chunked,
    UntilClose,
}

/// A response being received.
struct Response {
    max_body: usize,
    bytes: Vec<u8>,
    /// Framing and where the body starts, once the head is in.
    head: Option<(Framing, usize)>,
}

impl Response {
    fn new(max_body: usize) -> Response {
        Response {
            max_body,
            bytes: Vec::new(),
            head: None,
        }
    }

    fn push(&mut self, data: &[u8]) -> Result<(), FetchError> {
        self.bytes.extend_from_slice(data);
        if self.head.is_none() {
            match parse_head(&self.bytes)? {
                Some((framing, body_start)) => self.head = Some((framing, body_start)),
                None if self.bytes.len() > MAX_HEAD_BYTES => {
                    return Err(FetchError::Malformed(format!(
                        "no end of headers within {MAX_HEAD_BYTES} bytes"
                    )));
                }
                None => return Ok(()),
            }
        }
        if let Some((framing, body_start)) = self.head {
            if let Framing::Length(length) = framing
                && length > self.max_body
            {
                return Err(FetchError::TooLarge {
                    limit: self.max_body,
                });
            }
            let body_bytes = self.bytes.len() - body_start;
            // Chunk headers add a little to the raw size; allow for them.
            let raw_limit = match framing {
                Framing::Chunked => self
                    .max_body
                    .saturating_add(self.max_body / 8)
                    .saturating_add(1024),
                _ => self.max_body,
            };
            if body_bytes > raw_limit {
                return Err(FetchError::TooLarge {
                    limit: self.max_body,
                });
            }
        }
        Ok(())
    }

    /// The body, when it is complete.
    fn complete(&self) -> Result<Option<Vec<u8>>, FetchError> {
        let Some((framing, body_start)) = self.head else {
            return Ok(None);
        };
        let body = &self.bytes[body_start..];
        match framing {
            Framing::Length(length) if body.len() >= length => Ok(Some(body[..length].to_vec())),
            Framing::Length(_) | Framing::UntilClose => Ok(None),
            // A chunked body ends with "0\r\n\r\n" (no trailers from a metrics endpoint,
            // and trailers end in a blank line too): only then is decoding worthwhile.
            Framing::Chunked if body.ends_with(b"\r\n\r\n") => decode_chunked(body, self.max_body),
            Framing::Chunked => Ok(None),
        }
    }

    /// The peer closed the connection.
    fn at_close(&self) -> Result<Vec<u8>, FetchError> {
        let Some((framing, body_start)) = self.head else {
            return Err(FetchError::Malformed(if self.bytes.is_empty() {
                "the connection closed without a response".to_string()
            } else {
                "the connection closed inside the headers".to_string()
            }));
        };
        match framing {
            Framing::UntilClose => Ok(self.bytes[body_start..].to_vec()),
            Framing::Length(length) => Err(FetchError::Malformed(format!(
                "the connection closed after {} of {length} body bytes",
                self.bytes.len() - body_start
            ))),
            Framing::Chunked => decode_chunked(&self.bytes[body_start..], self.max_body)?
                .ok_or_else(|| {
                    FetchError::Malformed("the connection closed inside a chunked body".into())
                }),
        }
    }
}

/// Parses the status line and headers; `None` until the blank line has arrived.
/// A status other than 200 is an error here already (its body is not needed).
fn parse_head(bytes: &[u8]) -> Result<Option<(Framing, usize)>, FetchError> {
    let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = String::from_utf8_lossy(&bytes[..end]);
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(FetchError::Malformed(format!(
            "not an HTTP/1.x status line: {:?}",
            truncate(status_line)
        )));
    }
    let status: u16 = parts.next().and_then(|s| s.parse().ok()).ok_or_else(|| {
        FetchError::Malformed(format!("bad status line: {:?}", truncate(status_line)))
    })?;
    if status != 200 {
        return Err(FetchError::Status {
            status,
            reason: truncate(parts.next().unwrap_or_default()).to_string(),
        });
    }
    let mut framing = Framing::UntilClose;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            return Err(FetchError::Malformed(format!(
                "bad header line: {:?}",
                truncate(line)
            )));
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("transfer-encoding") {
            if value.eq_ignore_ascii_case("chunked") {
                framing = Framing::Chunked;
            } else if !value.eq_ignore_ascii_case("identity") {
                return Err(FetchError::Malformed(format!(
                    "unsupported transfer encoding {value:?}"
                )));
            }
        } else if name.eq_ignore_ascii_case("content-length") && framing != Framing::Chunked {
            let length = value.parse().map_err(|_| {
                FetchError::Malformed(format!("bad Content-Length {:?}", truncate(value)))
            })?;
            framing = Framing::Length(length);
        } else if name.eq_ignore_ascii_case("content-encoding")
            && !value.eq_ignore_ascii_case("identity")
        {
            return Err(FetchError::Malformed(format!(
                "compressed body ({value:?}) although identity was asked for"
            )));
        }
    }
    Ok(Some((framing, end + 4)))
}

/// Decodes a chunked body; `None` while incomplete.
fn decode_chunked(mut raw: &[u8], max_body: usize) -> Result<Option<Vec<u8>>, FetchError> {
    let mut body = Vec::new();
    loop {
        let Some(line_end) = raw.windows(2).position(|w| w == b"\r\n") else {
            return Ok(None);
        };
        let size_line = String::from_utf8_lossy(&raw[..line_end]);
        let size_text = size_line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| {
            FetchError::Malformed(format!("bad chunk size {:?}", truncate(size_text)))
        })?;
        raw = &raw[line_end + 2..];
        if size == 0 {
            // Trailers, then a blank line.
            return Ok(raw
                .windows(2)
                .position(|w| w == b"\r\n")
                .is_some()
                .then_some(body));
        }
        if body.len().saturating_add(size) > max_body {
            return Err(FetchError::TooLarge { limit: max_body });
        }
        if raw.len() < size.saturating_add(2) {
            return Ok(None);
        }
        if &raw[size..size + 2] != b"\r\n" {
            return Err(FetchError::Malformed("a chunk does not end in CRLF".into()));
        }
        body.extend_from_slice(&raw[..size]);
        raw = &raw[size + 2..];
    }
}

fn truncate(text: &str) -> &str {
    match text.char_indices().nth(80) {
        Some((cut, _)) => &text[..cut],
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        let url = HttpUrl::parse("http://127.0.0.1:9090/metrics").unwrap();
        assert_eq!(
            url,
            HttpUrl {
                host: "127.0.0.1".into(),
                port: 9090,
                path: "/metrics".into()
            }
        );
        let url = HttpUrl::parse("HTTP://localhost").unwrap();
        assert_eq!((url.port, url.path.as_str()), (80, "/"));
        let url = HttpUrl::parse("http://[::1]:8000/m?x=1#frag").unwrap();
        assert_eq!(
            (url.host.as_str(), url.port, url.path.as_str()),
            ("[::1]", 8000, "/m?x=1")
        );
        assert_eq!(HttpUrl::parse("http://h?x").unwrap().path, "/?x");
    }

    #[test]
    fn refuses_bad_urls_quoting_them() {
        for (url, needle) in [
            ("https://h/metrics", "only http://"),
            ("127.0.0.1:9090/metrics", "only http://"),
            ("http:///metrics", "no host"),
            ("http://h:0/", "port"),
            ("http://h:99999/", "port"),
            ("http://h:abc/", "port"),
            ("http://u:p@h/", "passwords"),
            ("http://h o/", "blank"),
            ("http://h/{pid}", "{pid}"),
            ("http://[::1/", "`]`"),
            ("http://[nothex]/", "IPv6"),
            ("http://h%41/", "host"),
        ] {
            let err = HttpUrl::parse(url).expect_err(url).to_string();
            assert!(err.contains(needle), "{url}: {err}");
            assert!(err.contains(&format!("{url:?}")), "{url}: {err}");
        }
    }

    #[test]
    fn resolves_literals_without_lookup() {
        let url = HttpUrl::parse("http://[::1]:81/").unwrap();
        assert_eq!(url.resolve().unwrap(), vec!["[::1]:81".parse().unwrap()]);
    }

    fn receive(chunks: &[&[u8]], max_body: usize) -> Result<Vec<u8>, FetchError> {
        let mut response = Response::new(max_body);
        for chunk in chunks {
            if let Some(body) = response.complete()? {
                return Ok(body);
            }
            response.push(chunk)?;
        }
        match response.complete()? {
            Some(body) => Ok(body),
            None => response.at_close(),
        }
    }

    #[test]
    fn content_length_chunked_and_close_framings() {
        let body = receive(
            &[b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n", b"\r\nhello"],
            100,
        )
        .unwrap();
        assert_eq!(body, b"hello");
        let body = receive(
            &[
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhel",
                b"lo\r\n6\r\n world\r\n0\r\n\r\n",
            ],
            100,
        )
        .unwrap();
        assert_eq!(body, b"hello world");
        let body = receive(&[b"HTTP/1.0 200 OK\r\n\r\nuntil ", b"close"], 100).unwrap();
        assert_eq!(body, b"until close");
    }

    #[test]
    fn response_errors() {
        let err = receive(&[b"HTTP/1.1 500 Internal Server Error\r\n\r\n"], 100).unwrap_err();
        assert!(err.to_string().contains("500"), "{err}");
        let err = receive(
            &[
                b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n",
                &[b'x'; 200],
            ],
            100,
        )
        .unwrap_err();
        assert_eq!(err, FetchError::TooLarge { limit: 100 });
        let err = receive(&[b"HTTP/1.1 200 OK\r\n\r\n", &[b'x'; 200]], 100).unwrap_err();
        assert_eq!(err, FetchError::TooLarge { limit: 100 });
        let err = receive(
            &[b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1000\r\n"],
            100,
        )
        .unwrap_err();
        assert_eq!(err, FetchError::TooLarge { limit: 100 });
        for raw in [
            &b"garbage\r\n\r\n"[..],
            b"",
            b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nshort",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n",
            b"HTTP/1.1 abc OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Len",
        ] {
            let err = receive(&[raw], 100).unwrap_err();
            assert!(matches!(err, FetchError::Malformed(_)), "{raw:?}: {err:?}");
        }
    }

    /// Found by the property tests: with no practical limit on the body (`usize::MAX`),
    /// the chunked raw limit and a chunk of size 2^64-1 overflowed.
    #[test]
    fn an_unlimited_body_does_not_overflow() {
        let body = receive(
            &[b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"],
            usize::MAX,
        )
        .unwrap();
        assert_eq!(body, b"ok");
        let err = receive(
            &[b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\nab\r\n\r\n"],
            usize::MAX,
        )
        .unwrap_err();
        assert!(matches!(err, FetchError::Malformed(_)), "{err:?}");
    }
}

/// Properties of the response reader over generated input: no panic on any bytes cut
/// into any pieces (nor on valid responses with a byte changed or cut short), a body
/// never over the limit, and a body sent with any framing and in any pieces read back.
#[cfg(test)]
mod proptests {
    use proptest::prelude::*;

    use super::*;

    /// What the fetch loop does with the pieces read from the socket, then the close.
    fn receive(pieces: &[Vec<u8>], max_body: usize) -> Result<Vec<u8>, FetchError> {
        let mut response = Response::new(max_body);
        for piece in pieces {
            if let Some(body) = response.complete()? {
                return Ok(body);
            }
            response.push(piece)?;
        }
        match response.complete()? {
            Some(body) => Ok(body),
            None => response.at_close(),
        }
    }

    /// `bytes` cut at the given points.
    fn cut(bytes: &[u8], points: &[usize]) -> Vec<Vec<u8>> {
        let mut points: Vec<usize> = points.iter().map(|p| p % (bytes.len() + 1)).collect();
        points.sort_unstable();
        let mut pieces = Vec::new();
        let mut from = 0;
        for point in points {
            pieces.push(bytes[from..point].to_vec());
            from = point;
        }
        pieces.push(bytes[from..].to_vec());
        pieces
    }

    /// A 200 response carrying `body` with framing 0 (Content-Length), 1 (chunked, in
    /// chunks of the given sizes) or 2 (until close).
    fn response(body: &[u8], framing: u8, chunk_sizes: &[usize]) -> Vec<u8> {
        let mut raw = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n".to_vec();
        match framing {
            0 => {
                raw.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
                raw.extend_from_slice(body);
            }
            1 => {
                raw.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
                let mut rest = body;
                let mut sizes = chunk_sizes.iter().cycle();
                while !rest.is_empty() {
                    let size = sizes
                        .next()
                        .map_or(rest.len(), |s| (*s).clamp(1, rest.len()));
                    raw.extend_from_slice(format!("{size:x}\r\n").as_bytes());
                    raw.extend_from_slice(&rest[..size]);
                    raw.extend_from_slice(b"\r\n");
                    rest = &rest[size..];
                }
                raw.extend_from_slice(b"0\r\n\r\n");
            }
            _ => {
                raw.extend_from_slice(b"\r\n");
                raw.extend_from_slice(body);
            }
        }
        raw
    }

    fn max_body() -> impl Strategy<Value = usize> {
        prop_oneof![0..600usize, Just(usize::MAX)]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn any_bytes_in_any_pieces(
            pieces in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..8),
            max_body in max_body(),
        ) {
            if let Ok(body) = receive(&pieces, max_body) {
                prop_assert!(body.len() <= max_body);
                prop_assert!(body.len() <= pieces.iter().map(Vec::len).sum());
            }
        }

        #[test]
        fn heads_of_arbitrary_lines(
            lines in proptest::collection::vec("[ -~]{0,40}", 0..6),
            body in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let mut raw = b"HTTP/1.1 200 OK\r\n".to_vec();
            for line in &lines {
                raw.extend_from_slice(line.as_bytes());
                raw.extend_from_slice(b"\r\n");
            }
            raw.extend_from_slice(b"\r\n");
            raw.extend_from_slice(&body);
            if let Ok(got) = receive(&[raw], 100) {
                prop_assert!(got.len() <= 100);
            }
        }

        #[test]
        fn edited_valid_responses(
            body in proptest::collection::vec(any::<u8>(), 0..200),
            framing in 0..3u8,
            chunk_sizes in proptest::collection::vec(1..50usize, 1..4),
            at: usize,
            byte: u8,
            truncate: bool,
            max_body in max_body(),
        ) {
            let mut raw = response(&body, framing, &chunk_sizes);
            let at = at % raw.len();
            if truncate {
                raw.truncate(at);
            } else {
                raw[at] = byte;
            }
            if let Ok(got) = receive(&[raw], max_body) {
                prop_assert!(got.len() <= max_body);
            }
        }

        #[test]
        fn bodies_round_trip_in_any_framing_and_pieces(
            body in proptest::collection::vec(any::<u8>(), 0..300),
            framing in 0..3u8,
            chunk_sizes in proptest::collection::vec(1..80usize, 1..5),
            points in proptest::collection::vec(any::<usize>(), 0..6),
            slack in 0..10usize,
        ) {
            let raw = response(&body, framing, &chunk_sizes);
            let pieces = cut(&raw, &points);
            prop_assert_eq!(receive(&pieces, body.len() + slack), Ok(body.clone()));
            if !body.is_empty() {
                prop_assert_eq!(
                    receive(&pieces, body.len() - 1),
                    Err(FetchError::TooLarge { limit: body.len() - 1 })
                );
            }
        }
    }
}
