//! A tiny SMTP server on 127.0.0.1 for the tests of email alerts: plain SMTP (no TLS,
//! any `AUTH PLAIN`/`AUTH LOGIN` accepted and kept), each mail's envelope and `DATA`
//! recorded.
//!
//! ```no_run
//! # async fn demo() {
//! let server = sluice_testkit::smtp::SmtpServer::start().await;
//! // ... point an `email` channel at `server.addr` with `starttls: false` ...
//! let mails = server.mails();
//! # }
//! ```

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// One mail as received.
#[derive(Debug, Clone, Default)]
pub struct Mail {
    /// The `MAIL FROM` address.
    pub from: String,
    /// Each `RCPT TO` address.
    pub to: Vec<String>,
    /// The message (headers and body) sent after `DATA`, dot-unstuffed, lines ending in
    /// `\r\n`.
    pub data: String,
    /// The decoded credentials of an `AUTH` (`user\0password`), if the client logged in.
    pub auth: Option<String>,
}

/// A running server; it stops with the test's runtime.
#[derive(Debug, Clone)]
pub struct SmtpServer {
    /// Where it listens.
    pub addr: SocketAddr,
    mails: Arc<Mutex<Vec<Mail>>>,
}

impl SmtpServer {
    /// Starts a server on a free port of 127.0.0.1.
    pub async fn start() -> SmtpServer {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a port on 127.0.0.1");
        let addr = listener.local_addr().expect("the listener's address");
        let mails: Arc<Mutex<Vec<Mail>>> = Arc::default();
        let kept = mails.clone();
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                tokio::spawn(session(sock, kept.clone()));
            }
        });
        SmtpServer { addr, mails }
    }

    /// The mails received so far.
    pub fn mails(&self) -> Vec<Mail> {
        self.mails.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// The decoded text of a base64 value (for `AUTH`).
fn decode(text: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

async fn session(sock: TcpStream, mails: Arc<Mutex<Vec<Mail>>>) {
    let (read, mut write) = sock.into_split();
    let mut lines = BufReader::new(read);
    let mut mail = Mail::default();
    let mut auth: Option<String> = None;
    macro_rules! say {
        ($text:expr) => {
            if write.write_all($text.as_bytes()).await.is_err() {
                return;
            }
        };
    }
    say!("220 sluice-testkit ESMTP\r\n");
    let mut line = String::new();
    loop {
        line.clear();
        match lines.read_line(&mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let command = line.trim_end().to_owned();
        let upper = command.to_ascii_uppercase();
        if upper.starts_with("EHLO") {
            say!("250-sluice-testkit\r\n250-AUTH PLAIN LOGIN\r\n250 8BITMIME\r\n");
        } else if upper.starts_with("HELO") {
            say!("250 sluice-testkit\r\n");
        } else if upper.starts_with("AUTH PLAIN") {
            let rest = command[10..].trim();
            let creds = if rest.is_empty() {
                say!("334 \r\n");
                line.clear();
                if lines.read_line(&mut line).await.is_err() {
                    return;
                }
                decode(&line)
            } else {
                decode(rest)
            };
            auth = Some(creds.trim_start_matches('\0').to_owned());
            say!("235 2.7.0 accepted\r\n");
        } else if upper.starts_with("AUTH LOGIN") {
            say!("334 VXNlcm5hbWU6\r\n");
            line.clear();
            if lines.read_line(&mut line).await.is_err() {
                return;
            }
            let user = decode(&line);
            say!("334 UGFzc3dvcmQ6\r\n");
            line.clear();
            if lines.read_line(&mut line).await.is_err() {
                return;
            }
            auth = Some(format!("{user}\0{}", decode(&line)));
            say!("235 2.7.0 accepted\r\n");
        } else if upper.starts_with("MAIL FROM:") {
            mail = Mail {
                from: address(&command[10..]),
                auth: auth.clone(),
                ..Mail::default()
            };
            say!("250 ok\r\n");
        } else if upper.starts_with("RCPT TO:") {
            mail.to.push(address(&command[8..]));
            say!("250 ok\r\n");
        } else if upper == "DATA" {
            say!("354 end with <CRLF>.<CRLF>\r\n");
            let mut data = String::new();
            loop {
                line.clear();
                match lines.read_line(&mut line).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                if line == ".\r\n" || line == ".\n" {
                    break;
                }
                data.push_str(line.strip_prefix('.').unwrap_or(&line));
            }
            mail.data = data;
            mails
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(std::mem::take(&mut mail));
            say!("250 ok: queued\r\n");
        } else if upper == "RSET" || upper == "NOOP" {
            say!("250 ok\r\n");
        } else if upper == "QUIT" {
            say!("221 bye\r\n");
            return;
        } else {
            say!("502 not implemented\r\n");
        }
    }
}

/// `<a@b>` (with any parameters after it) as `a@b`.
fn address(text: &str) -> String {
    let text = text.trim();
    match (text.find('<'), text.find('>')) {
        (Some(open), Some(close)) if open < close => text[open + 1..close].to_owned(),
        _ => text
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_owned(),
    }
}
