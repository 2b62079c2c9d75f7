//! A local HTTP/1.1 receiver on 127.0.0.1 for the tests of what Sluice sends (the HTTP
//! sink, alert webhooks): each request (`Content-Length` bodies, keep-alive) is handed to
//! the test's handler, whose answer is sent back.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A request as received.
#[derive(Debug, Clone)]
pub struct Request {
    /// The request line and the headers, as sent.
    pub head: String,
    /// The body.
    pub body: Vec<u8>,
}

impl Request {
    /// The path of the request line.
    pub fn path(&self) -> &str {
        self.head.split_whitespace().nth(1).unwrap_or_default()
    }

    /// The value of the header `name` (case does not matter).
    pub fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_owned())
        })
    }
}

/// What the receiver answers.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The status.
    pub status: u16,
    /// Extra headers.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: String,
}

impl Answer {
    /// `status` with `{"status": <status>}` as a JSON body.
    pub fn status(status: u16) -> Answer {
        Answer {
            status,
            headers: Vec::new(),
            body: format!("{{\"status\":{status}}}"),
        }
    }

    /// The same answer with a header more.
    pub fn with_header(mut self, name: &str, value: &str) -> Answer {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }
}

/// Starts a receiver answering each request with `handler`; returns its address. It runs
/// until the test's runtime ends.
pub async fn receive<F>(handler: F) -> SocketAddr
where
    F: FnMut(&Request) -> Answer + Send + 'static,
{
    receive_at("127.0.0.1:0".parse().expect("an address"), handler).await
}

/// The same at a given address of 127.0.0.1 (a port that was free before, to bring a
/// link back up at the address it had).
pub async fn receive_at<F>(addr: SocketAddr, handler: F) -> SocketAddr
where
    F: FnMut(&Request) -> Answer + Send + 'static,
{
    let listener = TcpListener::bind(addr).await.expect("a port on 127.0.0.1");
    let addr = listener.local_addr().expect("the listener's address");
    let handler = Arc::new(Mutex::new(handler));
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            tokio::spawn(connection(sock, handler.clone()));
        }
    });
    addr
}

async fn connection<F>(mut sock: TcpStream, handler: Arc<Mutex<F>>)
where
    F: FnMut(&Request) -> Answer,
{
    let mut buf = Vec::new();
    loop {
        let head_end = loop {
            if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break p + 4;
            }
            match sock.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let mut request = Request {
            head,
            body: Vec::new(),
        };
        let len: usize = request
            .header("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        while buf.len() < head_end + len {
            match sock.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
        request.body = buf.drain(..head_end + len).skip(head_end).collect();
        let answer = (handler.lock().unwrap_or_else(|e| e.into_inner()))(&request);
        let mut text = format!(
            "HTTP/1.1 {} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
            answer.status,
            answer.body.len()
        );
        for (k, v) in &answer.headers {
            text.push_str(&format!("{k}: {v}\r\n"));
        }
        text.push_str("\r\n");
        text.push_str(&answer.body);
        if sock.write_all(text.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// A server on 127.0.0.1 that answers its first request `200` with a chunked body that
/// never ends (what a gzip bomb decodes to): a reader must stop at its own cap. The task
/// returns how many body bytes it sent before the client went away.
pub async fn endless_answer() -> (SocketAddr, tokio::task::JoinHandle<usize>) {
    const CHUNK: usize = 16 << 10;
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a local port");
    let addr = listener.local_addr().expect("its address");
    let server = tokio::spawn(async move {
        let Ok((mut sock, _)) = listener.accept().await else {
            return 0;
        };
        let mut request = vec![0u8; 8192];
        let _ = sock.read(&mut request).await;
        let head = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n";
        if sock.write_all(head).await.is_err() {
            return 0;
        }
        let mut chunk = format!("{CHUNK:x}\r\n").into_bytes();
        chunk.extend(std::iter::repeat_n(b'x', CHUNK));
        chunk.extend_from_slice(b"\r\n");
        let mut sent = 0usize;
        // Endless: only the client going away stops it.
        while sock.write_all(&chunk).await.is_ok() {
            sent += CHUNK;
        }
        sent
    });
    (addr, server)
}
