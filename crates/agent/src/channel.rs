//! The agent's side of the agent channel: register, watch the host view,
//! heartbeat, report port status (see `neutrino_proto`).

use std::time::Duration;

use neutrino_proto::{
    Heartbeat, KEEPALIVE_SECS, PREFIX, PortStatusReport, Registered, Registration, TOKEN_HEADER, WatchEvent,
};

#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    #[error("cannot reach the server: {0}")]
    Unreachable(String),
    /// The server does not know this host (it restarted): register again.
    #[error("the server does not know this host")]
    NotRegistered,
    #[error("the server refused the agent token")]
    Unauthorized,
    #[error("server answered {status}: {body}")]
    Server { status: u16, body: String },
    #[error("the watch stream ended")]
    StreamEnded,
    #[error("bad event from the server: {0}")]
    BadEvent(String),
}

pub struct ChannelClient {
    http: reqwest::Client,
    base: String,
    token: String,
}

const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

impl ChannelClient {
    pub fn new(server_url: &str, host: &str, token: &str) -> Result<Self, ChannelError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            .build()
            .map_err(|e| ChannelError::Unreachable(e.to_string()))?;
        let base = format!("{}{PREFIX}/hosts/{host}", server_url.trim_end_matches('/'));
        Ok(ChannelClient { http, base, token: token.to_string() })
    }

    async fn post<T: serde::Serialize>(&self, path: &str, body: &T) -> Result<reqwest::Response, ChannelError> {
        let resp = self
            .http
            .post(format!("{}/{path}", self.base))
            .header(TOKEN_HEADER, &self.token)
            .json(body)
            .timeout(REQUEST_TIMEOUT)
            .send()
            .await
            .map_err(|e| ChannelError::Unreachable(e.to_string()))?;
        check(resp).await
    }

    pub async fn register(&self, registration: &Registration) -> Result<Registered, ChannelError> {
        let resp = self.post("register", registration).await?;
        resp.json().await.map_err(|e| ChannelError::BadEvent(e.to_string()))
    }

    pub async fn heartbeat(&self, beat: &Heartbeat) -> Result<(), ChannelError> {
        self.post("heartbeat", beat).await.map(|_| ())
    }

    pub async fn report_ports(&self, report: &PortStatusReport) -> Result<(), ChannelError> {
        self.post("ports/status", report).await.map(|_| ())
    }

    /// Opens the watch stream, resuming from `since` when the server still
    /// has it.
    pub async fn watch(&self, since: Option<u64>) -> Result<WatchStream, ChannelError> {
        let mut url = format!("{}/watch", self.base);
        if let Some(rev) = since {
            url.push_str(&format!("?since={rev}"));
        }
        let resp = self
            .http
            .get(url)
            .header(TOKEN_HEADER, &self.token)
            .send()
            .await
            .map_err(|e| ChannelError::Unreachable(e.to_string()))?;
        Ok(WatchStream { resp: check(resp).await?, buf: Vec::new() })
    }
}

async fn check(resp: reqwest::Response) -> Result<reqwest::Response, ChannelError> {
    match resp.status().as_u16() {
        200..=299 => Ok(resp),
        401 => Err(ChannelError::Unauthorized),
        404 => Err(ChannelError::NotRegistered),
        status => Err(ChannelError::Server { status, body: resp.text().await.unwrap_or_default() }),
    }
}

/// Newline-delimited JSON events.
pub struct WatchStream {
    resp: reqwest::Response,
    buf: Vec<u8>,
}

impl WatchStream {
    /// The next event. A stream silent for three keepalive periods is
    /// treated as broken (a server or path that vanished without a FIN).
    pub async fn next(&mut self) -> Result<WatchEvent, ChannelError> {
        let silence = Duration::from_secs(KEEPALIVE_SECS * 3);
        loop {
            if let Some(pos) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=pos).collect();
                if line.iter().all(|b| b.is_ascii_whitespace()) {
                    continue;
                }
                return serde_json::from_slice(&line).map_err(|e| ChannelError::BadEvent(e.to_string()));
            }
            let chunk = tokio::time::timeout(silence, self.resp.chunk())
                .await
                .map_err(|_| ChannelError::StreamEnded)?
                .map_err(|e| ChannelError::Unreachable(e.to_string()))?;
            match chunk {
                Some(bytes) => self.buf.extend_from_slice(&bytes),
                None => return Err(ChannelError::StreamEnded),
            }
        }
    }
}
