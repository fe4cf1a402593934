//! The agent channel (`neutrino_proto`): registration, heartbeats, port
//! status, and the watch stream. It only moves the contract's types over
//! HTTP; what they mean is the agent's business.

use std::time::Duration;

use neutrino_proto::containers::{Attachment, AttachmentKey, ContainerAttach, ContainerPort, Detached};
use neutrino_proto::{
    CONTRACT_VERSION, Heartbeat, KEEPALIVE_SECS, PREFIX, PortStatusApplied, PortStatusReport, Registered, Registration,
    TOKEN_HEADER, WatchEvent, WatchQuery,
};
use reqwest::StatusCode;
use serde::Serialize;
use tracing::Instrument;

/// The header the server answers every request with.
const REQUEST_ID_HEADER: &str = "x-openstack-request-id";

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
    /// either says can be trusted to mean the same to the other.
    #[error(
        "the server speaks another agent contract (agent: version {agent}, server: {}): {message}",
        server.map_or_else(|| "unknown version".to_string(), |v| format!("version {v}"))
    )]
    ContractMismatch { agent: u32, server: Option<u32>, message: String },
    #[error("the server answered {status}: {body}")]
    Server { status: StatusCode, body: String },
    /// The server closed the watch stream.
    #[error("the watch stream ended")]
    StreamEnded,
    /// An answer that could not be read.
    #[error("bad answer from the server: {0}")]
    BadAnswer(#[source] reqwest::Error),
    /// Nothing arrived, not even a keepalive: a server or a path that
    /// vanished without closing the connection.
    #[error("the watch stream was silent for {0:?}")]
    Silent(Duration),
    #[error("bad answer from the server: {0}")]
    BadEvent(#[source] serde_json::Error),
    /// The server refused what was asked (an unknown network, a full
    /// subnet, a quota): its words.
    #[error("{message}")]
    Refused { status: StatusCode, message: String },
}

impl AgentError {
    /// Whether the server is there but refuses the agent for good, until
    /// one of them is upgraded.
    pub fn is_contract_mismatch(&self) -> bool {
        matches!(self, AgentError::ContractMismatch { .. })
    }
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

    /// Registers, and refuses a server of another contract version.
    pub async fn register(&self, registration: &Registration) -> Result<Registered, AgentError> {
        let resp = self.post("register", registration).await?;
        let bytes = resp.bytes().await.map_err(AgentError::BadAnswer)?;
        registered(&bytes)
    }

    pub async fn heartbeat(&self, beat: &Heartbeat) -> Result<(), AgentError> {
        self.post("heartbeat", beat).await.map(drop)
    }

    pub async fn report_ports(&self, report: &PortStatusReport) -> Result<PortStatusApplied, AgentError> {
        let resp = self.post("ports/status", report).await?;
        let bytes = resp.bytes().await.map_err(AgentError::BadAnswer)?;
        serde_json::from_slice(&bytes).map_err(AgentError::BadEvent)
    }

    /// The port of a container's attachment on this host, made unless it
    /// exists (`neutrino_proto::containers`).
    pub async fn attach_container(&self, attach: &ContainerAttach) -> Result<ContainerPort, AgentError> {
        let resp = self.post_refusable("containers", attach).await?;
        let bytes = resp.bytes().await.map_err(AgentError::BadAnswer)?;
        serde_json::from_slice(&bytes).map_err(AgentError::BadEvent)
    }

    /// Removes the port of a container's attachment; none is success.
    pub async fn detach_container(&self, key: &AttachmentKey) -> Result<Detached, AgentError> {
        let resp = self.post_refusable("containers/detach", key).await?;
        let bytes = resp.bytes().await.map_err(AgentError::BadAnswer)?;
        serde_json::from_slice(&bytes).map_err(AgentError::BadEvent)
    }

    /// The container ports bound to this host.
    pub async fn container_attachments(&self) -> Result<Vec<Attachment>, AgentError> {
        let request = self.http.get(format!("{}/containers", self.base)).timeout(REQUEST_TIMEOUT);
        let span = tracing::info_span!(
            "agent_channel",
            method = "GET",
            path = "containers",
            request_id = tracing::field::Empty
        );
        let resp = self.send(request).instrument(span).await?;
        let bytes = resp.bytes().await.map_err(AgentError::BadAnswer)?;
        serde_json::from_slice(&bytes).map_err(AgentError::BadEvent)
    }

    /// Opens the watch stream. With what the agent holds in `query` (its
    /// revision and digest) the server resumes instead of resending the
    /// whole view, whichever server the agent had before.
    pub async fn watch(&self, query: &WatchQuery) -> Result<WatchStream, AgentError> {
        let url = format!("{}/watch{}", self.base, query_string(query));
        let span = tracing::info_span!(
            "agent_channel",
            method = "GET",
            path = "watch",
            since = query.since,
            request_id = tracing::field::Empty
        );
        let resp = self.send(self.http.get(url)).instrument(span).await?;
        Ok(WatchStream { resp, lines: Lines::default(), silence: self.silence, received: 0 })
    }

    async fn post<T: Serialize>(&self, path: &str, body: &T) -> Result<reqwest::Response, AgentError> {
        let request = self.http.post(format!("{}/{path}", self.base)).json(body).timeout(REQUEST_TIMEOUT);
        self.send(request)
            .instrument(tracing::info_span!("agent_channel", method = "POST", path, request_id = tracing::field::Empty))
            .await
    }

    /// A POST whose refusals (400, 403, 409: what was asked cannot be
    /// done) are the caller's to report, not the channel's failures.
    async fn post_refusable<T: Serialize>(&self, path: &str, body: &T) -> Result<reqwest::Response, AgentError> {
        let request = self.http.post(format!("{}/{path}", self.base)).json(body).timeout(REQUEST_TIMEOUT);
        let span = tracing::info_span!("agent_channel", method = "POST", path, request_id = tracing::field::Empty);
        let resp =
            request.header(TOKEN_HEADER, &self.token).send().instrument(span).await.map_err(AgentError::Unreachable)?;
        match resp.status() {
            status @ (StatusCode::BAD_REQUEST | StatusCode::FORBIDDEN | StatusCode::CONFLICT) => {
                let body = resp.text().await.unwrap_or_default();
                Err(AgentError::Refused { status, message: neutron_message(&body) })
            }
            _ => check(resp).await,
        }
    }

    /// Sends with the credential, records the server's request id in the
    /// current span (so one change can be followed from the server's log to
    /// the agent's), and maps failure statuses.
    async fn send(&self, request: reqwest::RequestBuilder) -> Result<reqwest::Response, AgentError> {
        let resp = request.header(TOKEN_HEADER, &self.token).send().await.map_err(AgentError::Unreachable)?;
        if let Some(id) = resp.headers().get(REQUEST_ID_HEADER).and_then(|v| v.to_str().ok()) {
            tracing::Span::current().record("request_id", id);
        }
        tracing::debug!(status = resp.status().as_u16(), "agent channel answer");
        check(resp).await
    }
}

/// The answer to a registration, checked for the contract version first:
/// a server of another version may answer in another shape. Servers of
/// version 1 answered without one.
fn registered(body: &[u8]) -> Result<Registered, AgentError> {
    let value: serde_json::Value = serde_json::from_slice(body).map_err(AgentError::BadEvent)?;
    let server = value.get("contract").map_or(Some(1), |v| v.as_u64().and_then(|v| u32::try_from(v).ok()));
    if server != Some(CONTRACT_VERSION) {
        return Err(AgentError::ContractMismatch {
            agent: CONTRACT_VERSION,
            server,
            message: "the registration was answered in another version".into(),
        });
    }
    serde_json::from_value(value).map_err(AgentError::BadEvent)
}

/// `?since=REV&digest=HEX`, or what of it there is. Both are plain
/// numbers and hex digits: nothing to escape.
fn query_string(query: &WatchQuery) -> String {
    let parts: Vec<String> = [
        query.since.map(|rev| format!("since={rev}")),
        query.digest.as_ref().filter(|d| d.bytes().all(|b| b.is_ascii_hexdigit())).map(|d| format!("digest={d}")),
    ]
    .into_iter()
    .flatten()
    .collect();
    if parts.is_empty() { String::new() } else { format!("?{}", parts.join("&")) }
}

/// The `message` of a `{"NeutronError": {...}}` body, or the body itself.
fn neutron_message(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("NeutronError")?.get("message")?.as_str().map(str::to_string))
        .unwrap_or_else(|| body.to_string())
}

async fn check(resp: reqwest::Response) -> Result<reqwest::Response, AgentError> {
    match resp.status() {
        s if s.is_success() => Ok(resp),
        StatusCode::UNAUTHORIZED => Err(AgentError::Unauthorized),
        StatusCode::NOT_FOUND => Err(AgentError::NotRegistered),
        StatusCode::SERVICE_UNAVAILABLE => Err(AgentError::Unavailable),
        StatusCode::CONFLICT => {
            let body = resp.text().await.unwrap_or_default();
            Err(AgentError::ContractMismatch { agent: CONTRACT_VERSION, server: None, message: neutron_message(&body) })
        }
        status => Err(AgentError::Server { status, body: resp.text().await.unwrap_or_default() }),
    }
}

/// The events of one watch, one JSON object per line.
pub struct WatchStream {
    resp: reqwest::Response,
    lines: Lines,
    silence: Duration,
    received: u64,
}

impl WatchStream {
    /// Bytes received on this stream so far.
    pub fn received(&self) -> u64 {
        self.received
    }

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
                Some(bytes) => {
                    self.received += bytes.len() as u64;
                    self.lines.push(&bytes)
                }
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

    #[test]
    fn the_watch_query_carries_what_the_agent_holds() {
        assert_eq!(query_string(&WatchQuery::default()), "");
        assert_eq!(query_string(&WatchQuery { since: Some(42), digest: None }), "?since=42");
        let both = WatchQuery { since: Some(42), digest: Some("00ff".into()) };
        assert_eq!(query_string(&both), "?since=42&digest=00ff");
        // Never anything that would need escaping.
        let odd = WatchQuery { since: Some(1), digest: Some("a&b=c".into()) };
        assert_eq!(query_string(&odd), "?since=1");
    }

    #[test]
    fn a_registration_answer_of_another_contract_is_refused_before_it_is_read() {
        let (now, next) = (CONTRACT_VERSION, CONTRACT_VERSION + 1);
        let answer = format!(r#"{{"contract": {now}, "heartbeat_interval_secs": 10}}"#);
        let ok = registered(answer.as_bytes()).unwrap();
        assert_eq!(ok, Registered { contract: now, heartbeat_interval_secs: 10 });
        // Version 1 servers answered with a revision and no version.
        let v1 = registered(br#"{"revision": 5, "heartbeat_interval_secs": 10}"#).unwrap_err();
        assert!(matches!(v1, AgentError::ContractMismatch { agent, server: Some(1), .. } if agent == now), "{v1}");
        let newer = registered(format!(r#"{{"contract": {next}, "something": "else"}}"#).as_bytes()).unwrap_err();
        assert!(matches!(newer, AgentError::ContractMismatch { server: Some(s), .. } if s == next), "{newer}");
        assert!(newer.to_string().contains(&format!("agent: version {now}, server: version {next}")), "{newer}");
        assert!(matches!(registered(b"not json"), Err(AgentError::BadEvent(_))));
    }

    #[test]
    fn a_contract_refusal_says_what_the_server_said() {
        let body = r#"{"NeutronError": {"type": "Conflict", "message": "agent contract 1 is not 2", "detail": ""}}"#;
        assert_eq!(neutron_message(body), "agent contract 1 is not 2");
        assert_eq!(neutron_message("plain text"), "plain text");
    }
}
