//! The `/metrics` endpoint: one thread that answers requests with the exposition of the
//! shared [`ExportState`]. It serves nothing else: `GET` and `HEAD` of `/metrics`, 404
//! for other paths, 405 for other methods. There is no control surface.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use tiny_http::{Header, Method, Request, Response, Server};

use super::{ExportError, ExportState, exposition};

/// How often the server thread looks at its stop flag while idle.
const POLL: Duration = Duration::from_millis(100);

/// The server thread; stopped and joined on drop.
pub struct MetricsServer {
    address: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl MetricsServer {
    /// Binds `address` and starts answering requests from `state`.
    pub fn start(
        address: SocketAddr,
        state: Arc<Mutex<ExportState>>,
    ) -> Result<MetricsServer, ExportError> {
        let server = Server::http(address).map_err(|e| ExportError::Bind {
            address,
            reason: e.to_string(),
        })?;
        let bound = server.server_addr().to_ip().unwrap_or(address);
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = Arc::clone(&stop);
            std::thread::Builder::new()
                .name("tfwatch-metrics".to_string())
                .spawn(move || serve(&server, &state, &stop))
                .map_err(|e| ExportError::Bind {
                    address,
                    reason: format!("cannot start the server thread: {e}"),
                })?
        };
        Ok(MetricsServer {
            address: bound,
            stop,
            thread: Some(thread),
        })
    }

    /// The address bound.
    pub fn address(&self) -> SocketAddr {
        self.address
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve(server: &Server, state: &Mutex<ExportState>, stop: &AtomicBool) {
    while !stop.load(Ordering::SeqCst) {
        // An error is one failed connection; the server goes on.
        if let Ok(Some(request)) = server.recv_timeout(POLL) {
            answer(request, state);
        }
    }
}

/// What a request gets: status, body, and whether it is the exposition.
pub fn route(method: &Method, url: &str) -> (u16, Option<&'static str>) {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    match (method, path) {
        (Method::Get | Method::Head, "/metrics") => (200, None),
        (_, "/metrics") => (405, Some("only GET and HEAD are served\n")),
        _ => (404, Some("not found: tfwatch serves only /metrics\n")),
    }
}

fn header(name: &str, value: &str) -> Option<Header> {
    Header::from_bytes(name.as_bytes(), value.as_bytes()).ok()
}

fn answer(request: Request, state: &Mutex<ExportState>) {
    let response = match route(request.method(), request.url()) {
        (200, _) => {
            // Render under the lock, write with it released.
            let body = exposition::render(&state.lock().unwrap_or_else(PoisonError::into_inner));
            let mut response = Response::from_string(body);
            if let Some(h) = header("Content-Type", exposition::CONTENT_TYPE) {
                response.add_header(h);
            }
            response
        }
        (status, body) => {
            let mut response =
                Response::from_string(body.unwrap_or_default()).with_status_code(status);
            if let Some(h) = header("Content-Type", "text/plain; charset=utf-8") {
                response.add_header(h);
            }
            if status == 405
                && let Some(h) = header("Allow", "GET, HEAD")
            {
                response.add_header(h);
            }
            response
        }
    };
    // A client that went away is not an error.
    let _ = request.respond(response);
}
