//! The agent channel (`neutrino_proto`): registration, heartbeats, port
//! status, and the watch stream. It only moves the contract's types over
//! HTTP; what they mean is the agent's business.

use std::time::Duration;

use neutrino_proto::{
    CONTRACT_VERSION, Heartbeat, KEEPALIVE_SECS, PREFIX, PortStatusApplied, PortStatusReport, Registered,
    Registration, TOKEN_HEADER, WatchEvent, WatchQuery,
};
use reqwest::StatusCode;
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("cannot build the HTTP client: {0}")]
    Build(#[source] reqwest::Error),
    #[error("cannot reach the server: {0}")]
    Unreachable(#[source] reqwest::Error),
    /// The server does not know this host (it restarted, or another server
    /// answered): register again.
    #[error("the server does not know this host")]
    NotRegistered,
    #[error("the server refused the agent token")]
    Unauthorized,
    /// The server is up but not ready to serve agents yet.
    #[error("the server is not ready yet")]
    Unavailable,
    /// Agent and server speak different versions of the contract: nothing
    /// they say to each other can be trusted to mean the same.
    #[error("{0}")]
    ContractMismatch(String),
    #[error("the server answered {status}: {body}")]
    Server { status: StatusCode, body: String },
    /// The server closed the watch stream.
    #[error("the watch stream ended")]
    StreamEnded,
    /// Nothing arrived, not even a keepalive: a server or a path that
    /// vanished without closing the connection.
    #[error("the watch stream was silent for {0:?}")]
    Silent(Duration),
    #[error("bad answer from the server: {0}")]
    BadEvent(#[source] serde_json::Error),
}

/// Per request; the watch stream has its silence timeout instead.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The channel of one host.
pub struct AgentClient {
    http: reqwest::Client,
    /// `{server}/agent/v1/hosts/{host}`.
    base: String,
    token: String,
    silence: Duration,
}

impl AgentClient {
    pub fn new(server_url: &str, host: &str, token: &str) -> Result<Self, AgentError> {
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .build()
            .map_err(AgentError::Build)?;
        Ok(AgentClient {
            http,
            base: format!("{}{PREFIX}/hosts/{host}", server_url.trim_end_matches('/')),
            token: token.to_string(),
            // Three keepalive periods: one late keepalive is not a failure.
            silence: Duration::from_secs(KEEPALIVE_SECS * 3),
        })
    }

    /// How long a watch stream may stay silent before it counts as broken.
    pub fn with_silence_timeout(mut self, silence: Duration) -> Self {
        self.silence = silence;
        self
    }

    pub async fn register(&self, registration: &Registration) -> Result<Registered, AgentError> {
        let resp = self.post("register", registration).await?;
        let bytes = resp.bytes().await.map_err(AgentError::Unreachable)?;
        let registered: Registered = serde_json::from_slice(&bytes).map_err(AgentError::BadEvent)?;
        if registered.contract != CONTRACT_VERSION {
            return Err(AgentError::ContractMismatch(format!(
                "the server speaks agent channel contract {} but this agent speaks {CONTRACT_VERSION}: run an agent and a server of the same release",
                registered.contract
            )));
        }
        Ok(registered)
    }

    pub async fn heartbeat(&self, beat: &Heartbeat) -> Result<(), AgentError> {
        self.post("heartbeat", beat).await.map(drop)
    }

    pub async fn report_ports(&self, report: &PortStatusReport) -> Result<PortStatusApplied, AgentError> {
        let resp = self.post("ports/status", report).await?;
        let bytes = resp.bytes().await.map_err(AgentError::Unreachable)?;
        serde_json::from_slice(&bytes).map_err(AgentError::BadEvent)
    }

    /// Opens the watch stream. With what the agent holds in `query` (its
    /// revision and digest) the server resumes instead of resending the
    /// whole view, whichever server the agent had before.
    pub async fn watch(&self, query: &WatchQuery) -> Result<WatchStream, AgentError> {
        // Both values are URL-safe as they are (a number, hex digits).
        let mut params = Vec::new();
        if let Some(since) = query.since {
            params.push(format!("since={since}"));
        }
        if let Some(digest) = query.digest.as_deref().filter(|d| d.bytes().all(|b| b.is_ascii_hexdigit())) {
            params.push(format!("digest={digest}"));
        }
        let url = match params.is_empty() {
            true => format!("{}/watch", self.base),
            false => format!("{}/watch?{}", self.base, params.join("&")),
        };
        let resp = self
            .http
            .get(url)
            .header(TOKEN_HEADER, &self.token)
            .send()
            .await
            .map_err(AgentError::Unreachable)?;
        Ok(WatchStream { resp: check(resp).await?, lines: Lines::default(), silence: self.silence })
    }

    async fn post<T: Serialize>(&self, path: &str, body: &T) -> Result<reqwest::Response, AgentError> {
        let resp = self
            .http
            .post(format!("{}/{path}", self.base))
            .header(TOKEN_HEADER, &self.token)
            .json(body)
            .timeout(REQUEST_TIMEOUT)
            .send()
            .await
            .map_err(AgentError::Unreachable)?;
        check(resp).await
    }
}

async fn check(resp: reqwest::Response) -> Result<reqwest::Response, AgentError> {
    match resp.status() {
        s if s.is_success() => Ok(resp),
        StatusCode::UNAUTHORIZED => Err(AgentError::Unauthorized),
        StatusCode::NOT_FOUND => Err(AgentError::NotRegistered),
        StatusCode::SERVICE_UNAVAILABLE => Err(AgentError::Unavailable),
        status => {
            let body = resp.text().await.unwrap_or_default();
            let message = serde_json::from_str::<serde_json::Value>(&body).ok().and_then(|v| {
                (v["NeutronError"]["type"] == "AgentContractMismatch")
                    .then(|| v["NeutronError"]["message"].as_str().unwrap_or_default().to_string())
            });
            match message {
                Some(m) => Err(AgentError::ContractMismatch(m)),
                None => Err(AgentError::Server { status, body }),
            }
        }
    }
}

/// The events of one watch, one JSON object per line.
pub struct WatchStream {
    resp: reqwest::Response,
    lines: Lines,
    silence: Duration,
}

impl WatchStream {
    /// The next event; an error ends the stream (watch again).
    pub async fn next(&mut self) -> Result<WatchEvent, AgentError> {
        loop {
            if let Some(line) = self.lines.next_line() {
                return serde_json::from_slice(&line).map_err(AgentError::BadEvent);
            }
            let chunk = tokio::time::timeout(self.silence, self.resp.chunk())
                .await
                .map_err(|_| AgentError::Silent(self.silence))?
                .map_err(AgentError::Unreachable)?;
            match chunk {
                Some(bytes) => self.lines.push(&bytes),
                None => return Err(AgentError::StreamEnded),
            }
        }
    }
}

/// Bytes in, complete lines out; a line may arrive in many chunks and a
/// chunk may hold many lines.
#[derive(Default)]
struct Lines {
    buf: Vec<u8>,
    /// How much of `buf` is known to hold no newline, so a snapshot of
    /// megabytes arriving in small chunks is scanned once, not once per chunk.
    scanned: usize,
}

impl Lines {
    fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// The next line that is not blank, without its newline.
    fn next_line(&mut self) -> Option<Vec<u8>> {
        loop {
            let Some(offset) = self.buf[self.scanned..].iter().position(|b| *b == b'\n') else {
                self.scanned = self.buf.len();
                return None;
            };
            let end = self.scanned + offset;
            let mut line: Vec<u8> = self.buf.drain(..=end).collect();
            self.scanned = 0;
            line.pop();
            if !line.iter().all(u8::is_ascii_whitespace) {
                return Some(line);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_cut_at_newlines_whatever_the_chunks() {
        let mut lines = Lines::default();
        lines.push(b"{\"a\":");
        assert_eq!(lines.next_line(), None);
        lines.push(b"1}\n\n  \n{\"b\"");
        assert_eq!(lines.next_line().as_deref(), Some(&b"{\"a\":1}"[..]));
        assert_eq!(lines.next_line(), None, "blank lines are skipped, a partial line is kept");
        lines.push(b":2}\n{\"c\":3}\n");
        assert_eq!(lines.next_line().as_deref(), Some(&b"{\"b\":2}"[..]));
        assert_eq!(lines.next_line().as_deref(), Some(&b"{\"c\":3}"[..]));
        assert_eq!(lines.next_line(), None);
        assert!(lines.buf.is_empty());
    }
}
