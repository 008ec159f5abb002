//! The metrics endpoint's HTTP/1.1 GET, through ureq: one total deadline for connect,
//! request and response, a cap on the body, no proxy, no redirects, no compression.
//! `Content-Length`, chunked transfer encoding and a body that ends at close are
//! ureq's; what is ours is the URL check (its error texts), the addresses resolved once,
//! and the "unavailable" reasons of [`FetchError`].

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::time::Duration;

use ureq::unversioned::resolver::{ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::{DefaultConnector, NextTimeout};

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

/// What the request asks for: the Prometheus text format first, OpenMetrics next.
const ACCEPT: &str =
    "text/plain;version=0.0.4;q=1.0, application/openmetrics-text;version=1.0.0;q=0.5, */*;q=0.1";

/// Hands ureq the addresses resolved once, up front, so that no scrape waits on the
/// system resolver.
#[derive(Debug)]
struct Resolved(Vec<SocketAddr>);

impl Resolver for Resolved {
    fn resolve(
        &self,
        _uri: &ureq::http::Uri,
        _config: &ureq::config::Config,
        _timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let mut addresses = self.empty();
        for address in self.0.iter().take(16) {
            addresses.push(*address);
        }
        if addresses.is_empty() {
            return Err(ureq::Error::HostNotFound);
        }
        Ok(addresses)
    }
}

/// One endpoint's HTTP client: the URL, its addresses and the deadline, set up once.
#[derive(Debug, Clone)]
pub struct Client {
    agent: ureq::Agent,
    uri: String,
    /// How the endpoint is named in errors: the address, or `host:port` for several.
    address: String,
    timeout: Duration,
}

impl Client {
    /// A client that GETs `url` from the first of `addresses` that accepts, each whole
    /// exchange within `timeout`.
    pub fn new(url: &HttpUrl, addresses: &[SocketAddr], timeout: Duration) -> Client {
        let config = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .http_status_as_error(false)
            .max_redirects(0)
            .max_redirects_will_error(false)
            .proxy(None)
            .max_idle_connections(0)
            .max_idle_connections_per_host(0)
            .max_response_header_size(MAX_HEAD_BYTES)
            .user_agent(format!("tfwatch/{}", env!("CARGO_PKG_VERSION")))
            .accept(ACCEPT)
            .build();
        let agent = ureq::Agent::with_parts(
            config,
            DefaultConnector::default(),
            Resolved(addresses.to_vec()),
        );
        let address = match addresses {
            [one] => one.to_string(),
            _ => format!("{}:{}", url.host, url.port),
        };
        Client {
            agent,
            uri: format!("http://{}:{}{}", url.host, url.port, url.path),
            address,
            timeout,
        }
    }

    /// GETs the URL and returns the body of a 200 response, at most `max_body` bytes.
    pub fn get(&self, max_body: usize) -> Result<Vec<u8>, FetchError> {
        let mut response = self
            .agent
            .get(&self.uri)
            .header("Accept-Encoding", "identity")
            .header("Connection", "close")
            .call()
            .map_err(|err| self.error(err, "waiting for the response head"))?;
        let status = response.status();
        if status != ureq::http::StatusCode::OK {
            return Err(FetchError::Status {
                status: status.as_u16(),
                reason: status.canonical_reason().unwrap_or_default().to_string(),
            });
        }
        let headers = response.headers();
        for value in headers.get_all("content-encoding") {
            let value = String::from_utf8_lossy(value.as_bytes());
            if !value.trim().eq_ignore_ascii_case("identity") {
                return Err(FetchError::Malformed(format!(
                    "compressed body ({:?}) although identity was asked for",
                    truncate(value.trim())
                )));
            }
        }
        for value in headers.get_all("transfer-encoding") {
            let value = String::from_utf8_lossy(value.as_bytes());
            let value = value.trim();
            if !value.eq_ignore_ascii_case("chunked") && !value.eq_ignore_ascii_case("identity") {
                return Err(FetchError::Malformed(format!(
                    "unsupported transfer encoding {:?}",
                    truncate(value)
                )));
            }
        }
        let body = response.body_mut();
        if body
            .content_length()
            .is_some_and(|length| length > max_body as u64)
        {
            return Err(FetchError::TooLarge { limit: max_body });
        }
        body.with_config()
            .limit(u64::try_from(max_body).unwrap_or(u64::MAX))
            .read_to_vec()
            .map_err(|err| match err {
                ureq::Error::BodyExceedsLimit(_) => FetchError::TooLarge { limit: max_body },
                err => self.error(err, "reading the body"),
            })
    }

    fn error(&self, err: ureq::Error, stage: &'static str) -> FetchError {
        use std::io::ErrorKind;
        match err {
            ureq::Error::Timeout(_) => FetchError::TimedOut {
                timeout: self.timeout,
                stage,
            },
            ureq::Error::Io(io) => match io.kind() {
                ErrorKind::ConnectionRefused => FetchError::Refused {
                    address: self.address.clone(),
                },
                ErrorKind::TimedOut | ErrorKind::WouldBlock => FetchError::TimedOut {
                    timeout: self.timeout,
                    stage,
                },
                ErrorKind::UnexpectedEof => {
                    FetchError::Malformed(format!("the connection closed while {stage}"))
                }
                _ => FetchError::Io {
                    address: self.address.clone(),
                    reason: io.to_string(),
                },
            },
            ureq::Error::HostNotFound => FetchError::Io {
                address: self.address.clone(),
                reason: "the host name resolved to no address".to_string(),
            },
            ureq::Error::ConnectionFailed => FetchError::Io {
                address: self.address.clone(),
                reason: "the connection failed".to_string(),
            },
            ureq::Error::LargeResponseHeader(..) => {
                FetchError::Malformed(format!("no end of headers within {MAX_HEAD_BYTES} bytes"))
            }
            other => FetchError::Malformed(other.to_string()),
        }
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
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::thread::JoinHandle;

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

    /// A server on 127.0.0.1 that answers one connection with `pieces`, written one
    /// after the other, then closes; it gives up after a few seconds without a client.
    /// Returns the request head it read.
    pub(super) fn serve_once(pieces: Vec<Vec<u8>>) -> (HttpUrl, SocketAddr, JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        let address = listener.local_addr().expect("local address");
        listener.set_nonblocking(true).expect("non-blocking");
        let thread = std::thread::spawn(move || {
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            let mut stream = loop {
                match listener.accept() {
                    Ok((stream, _)) => break stream,
                    Err(_) if std::time::Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    Err(_) => return String::new(),
                }
            };
            stream.set_nonblocking(false).expect("blocking");
            let head = read_head(&mut stream);
            for piece in pieces {
                if stream
                    .write_all(&piece)
                    .and_then(|()| stream.flush())
                    .is_err()
                {
                    break;
                }
            }
            head
        });
        let url = HttpUrl::parse(&format!("http://{address}/metrics")).expect("url");
        (url, address, thread)
    }

    fn read_head(stream: &mut TcpStream) -> String {
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("read timeout");
        let mut head = Vec::new();
        let mut byte = [0_u8; 1];
        while !head.ends_with(b"\r\n\r\n") && head.len() < 16 * 1024 {
            match stream.read(&mut byte) {
                Ok(1) => head.push(byte[0]),
                _ => break,
            }
        }
        String::from_utf8_lossy(&head).into_owned()
    }

    /// The response `pieces` fetched from a real socket with a body cap.
    pub(super) fn fetch(pieces: &[&[u8]], max_body: usize) -> Result<Vec<u8>, FetchError> {
        let (url, address, server) = serve_once(pieces.iter().map(|p| p.to_vec()).collect());
        let result = Client::new(&url, &[address], Duration::from_secs(5)).get(max_body);
        server.join().expect("server thread");
        result
    }

    #[test]
    fn asks_for_text_without_compression_or_keep_alive() {
        let (url, address, server) = serve_once(vec![
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec(),
        ]);
        let body = Client::new(&url, &[address], Duration::from_secs(5)).get(100);
        assert_eq!(body, Ok(b"ok".to_vec()));
        let head = server.join().unwrap().to_ascii_lowercase();
        assert!(head.starts_with("get /metrics http/1.1\r\n"), "{head}");
        for header in [
            "accept-encoding: identity",
            "connection: close",
            "user-agent: tfwatch/",
            "accept: text/plain;version=0.0.4",
            &format!("host: {address}"),
        ] {
            assert!(head.contains(header), "{header} not in {head}");
        }
    }

    #[test]
    fn content_length_chunked_and_close_framings() {
        let body = fetch(
            &[b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n", b"\r\nhello"],
            100,
        )
        .unwrap();
        assert_eq!(body, b"hello");
        let body = fetch(
            &[
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhel",
                b"lo\r\n6\r\n world\r\n0\r\n\r\n",
            ],
            100,
        )
        .unwrap();
        assert_eq!(body, b"hello world");
        let body = fetch(&[b"HTTP/1.0 200 OK\r\n\r\nuntil ", b"close"], 100).unwrap();
        assert_eq!(body, b"until close");
    }

    #[test]
    fn response_errors() {
        let err = fetch(&[b"HTTP/1.1 500 Internal Server Error\r\n\r\n"], 100).unwrap_err();
        assert!(err.to_string().contains("HTTP status 500"), "{err}");
        let err = fetch(&[b"HTTP/1.1 302 Found\r\nLocation: /x\r\n\r\n"], 100).unwrap_err();
        assert!(err.to_string().contains("HTTP status 302"), "{err}");
        let err = fetch(
            &[
                b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n",
                &[b'x'; 200],
            ],
            100,
        )
        .unwrap_err();
        assert_eq!(err, FetchError::TooLarge { limit: 100 });
        let err = fetch(&[b"HTTP/1.1 200 OK\r\n\r\n", &[b'x'; 200]], 100).unwrap_err();
        assert_eq!(err, FetchError::TooLarge { limit: 100 });
        let err = fetch(
            &[
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1000\r\n",
                &[b'x'; 0x1000],
                b"\r\n0\r\n\r\n",
            ],
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
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n",
            b"HTTP/1.1 abc OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Len",
        ] {
            let err = fetch(&[raw], 100).unwrap_err();
            assert!(matches!(err, FetchError::Malformed(_)), "{raw:?}: {err:?}");
        }
    }

    #[test]
    fn a_head_without_end_is_refused_at_its_cap() {
        let mut raw = b"HTTP/1.1 200 OK\r\n".to_vec();
        while raw.len() <= MAX_HEAD_BYTES {
            raw.extend_from_slice(b"X-Padding: padding padding padding padding\r\n");
        }
        let err = fetch(&[&raw], 100).unwrap_err();
        assert!(
            matches!(&err, FetchError::Malformed(m) if m.contains("headers")),
            "{err:?}"
        );
    }

    #[test]
    fn an_unlimited_body_does_not_overflow() {
        let body = fetch(
            &[b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"],
            usize::MAX,
        )
        .unwrap();
        assert_eq!(body, b"ok");
        let err = fetch(
            &[b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\nab\r\n\r\n"],
            usize::MAX,
        )
        .unwrap_err();
        assert!(matches!(err, FetchError::Malformed(_)), "{err:?}");
    }

    #[test]
    fn refused_and_silent_endpoints() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        drop(listener);
        let url = HttpUrl::parse(&format!("http://{address}/")).unwrap();
        let err = Client::new(&url, &[address], Duration::from_secs(2))
            .get(100)
            .unwrap_err();
        assert_eq!(
            err,
            FetchError::Refused {
                address: address.to_string()
            }
        );
        // Accepts, reads the request and says nothing: the deadline ends the wait.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let url = HttpUrl::parse(&format!("http://{address}/")).unwrap();
        let timeout = Duration::from_millis(200);
        let started = std::time::Instant::now();
        let err = Client::new(&url, &[address], timeout).get(100).unwrap_err();
        assert_eq!(
            err,
            FetchError::TimedOut {
                timeout,
                stage: "waiting for the response head"
            }
        );
        assert!(started.elapsed() < Duration::from_secs(2), "{err}");
        drop(listener);
    }
}

/// Properties of the client over generated responses from a real socket: no panic on
/// any bytes (nor on valid responses with a byte changed or cut short), a body never over
/// the limit, and a body sent with any framing read back.
#[cfg(test)]
mod proptests {
    use proptest::prelude::*;

    use super::tests::fetch;

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
        // Each case is a real connection on 127.0.0.1.
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn any_bytes(
            raw in proptest::collection::vec(any::<u8>(), 0..256),
            max_body in max_body(),
        ) {
            if let Ok(body) = fetch(&[&raw], max_body) {
                prop_assert!(body.len() <= max_body);
                prop_assert!(body.len() <= raw.len());
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
            if let Ok(got) = fetch(&[&raw], max_body) {
                prop_assert!(got.len() <= max_body);
            }
        }

        #[test]
        fn bodies_round_trip_in_any_framing(
            body in proptest::collection::vec(any::<u8>(), 0..300),
            framing in 0..3u8,
            chunk_sizes in proptest::collection::vec(1..80usize, 1..5),
            slack in 0..10usize,
        ) {
            let raw = response(&body, framing, &chunk_sizes);
            prop_assert_eq!(fetch(&[&raw], body.len() + slack), Ok(body.clone()));
            if !body.is_empty() {
                prop_assert_eq!(
                    fetch(&[&raw], body.len() - 1),
                    Err(super::FetchError::TooLarge { limit: body.len() - 1 })
                );
            }
        }
    }
}
