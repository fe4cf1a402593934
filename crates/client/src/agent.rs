//! The agent channel (`neutrino_proto`): registration, heartbeats, port
//! status, and the watch stream. It only moves the contract's types over
//! HTTP; what they mean is the agent's business.

use std::sync::Arc;
use std::time::Duration;

use neutrino_proto::containers::{Attachment, AttachmentKey, ContainerAttach, ContainerPort, Detached};
use neutrino_proto::{
    CONTRACT_VERSION, Heartbeat, KEEPALIVE_SECS, PREFIX, PortStatusApplied, PortStatusReport, Registered, Registration,
    TOKEN_HEADER, WatchEvent, WatchQuery,
};
use reqwest::StatusCode;
use serde::Serialize;
use tracing::Instrument;

use crate::servers::{Attempt, HttpSettings, Servers};

/// The header the server answers every request with.
const REQUEST_ID_HEADER: &str = "x-openstack-request-id";

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("cannot build the HTTP client: {0}")]
    Build(#[source] reqwest::Error),
    /// The servers given are not a list of http(s) URLs.
    #[error("bad server list '{list}': {reason}")]
    BadServerList { list: String, reason: String },
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

    /// Whether the server failed, rather than refused: no connection, a
    /// connection lost, no answer in time, a 5xx (503: not serving views
    /// yet). Another server may do better; a refusal (a wrong token, a
    /// contract mismatch, an unknown host, a request that cannot be done)
    /// would be the same anywhere.
    pub fn is_server_failure(&self) -> bool {
        match self {
            AgentError::Unreachable(_) | AgentError::Unavailable | AgentError::Silent(_) | AgentError::BadAnswer(_) => {
                true
            }
            AgentError::Server { status, .. } => status.is_server_error(),
            _ => false,
        }
    }
}

/// Per request; the watch stream has its silence timeout instead, and
/// this much for its answer to start.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The channel of one host, to one server or several (see [`crate::servers`]:
/// requests go to the current server and move on to the next one when it
/// fails as a server; a refusal is the caller's).
pub struct AgentClient {
    servers: Arc<Servers>,
    token: String,
    silence: Duration,
    request_timeout: Duration,
}

impl AgentClient {
    /// `servers` is one URL (`http://controller:9696`) or several,
    /// comma-separated; the first is tried first. A URL naming a host
    /// stands for each of its addresses.
    pub fn new(servers: &str, host: &str, token: &str) -> Result<Self, AgentError> {
        Ok(Self::with_servers(Servers::new(servers, suffix(host), http_settings())?, token))
    }

    fn with_servers(servers: Servers, token: &str) -> Self {
        AgentClient {
            servers: Arc::new(servers),
            token: token.to_string(),
            // Three keepalive periods: one late keepalive is not a failure.
            silence: Duration::from_secs(KEEPALIVE_SECS * 3),
            request_timeout: REQUEST_TIMEOUT,
        }
    }

    /// With names looked up by `lookup` (tests).
    #[cfg(test)]
    pub(crate) fn with_lookup(
        servers: &str,
        host: &str,
        token: &str,
        lookup: crate::servers::Lookup,
    ) -> Result<Self, AgentError> {
        Ok(Self::with_servers(Servers::with_lookup(servers, suffix(host), http_settings(), lookup)?, token))
    }

    /// How long a watch stream may stay silent before it counts as broken.
    pub fn with_silence_timeout(mut self, silence: Duration) -> Self {
        self.silence = silence;
        self
    }

    /// How long a request may wait for its answer before the server counts
    /// as failed (default 10 s).
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// The server requests go to now (its URL, and the address when its
    /// name was looked up).
    pub fn current_server(&self) -> String {
        self.servers.current()
    }

    /// Every server, in the order they are tried.
    pub fn servers(&self) -> Vec<String> {
        self.servers.endpoints()
    }

    /// Registers, and refuses a server of another contract version.
    pub async fn register(&self, registration: &Registration) -> Result<Registered, AgentError> {
        self.servers
            .call(|at| async move {
                let resp = self.post(&at, "register", registration).await?;
                let bytes = resp.bytes().await.map_err(AgentError::BadAnswer)?;
                registered(&bytes)
            })
            .await
    }

    pub async fn heartbeat(&self, beat: &Heartbeat) -> Result<(), AgentError> {
        self.servers.call(|at| async move { self.post(&at, "heartbeat", beat).await.map(drop) }).await
    }

    pub async fn report_ports(&self, report: &PortStatusReport) -> Result<PortStatusApplied, AgentError> {
        self.servers
            .call(|at| async move {
                let resp = self.post(&at, "ports/status", report).await?;
                json_answer(resp).await
            })
            .await
    }

    /// The port of a container's attachment on this host, made unless it
    /// exists (`neutrino_proto::containers`).
    pub async fn attach_container(&self, attach: &ContainerAttach) -> Result<ContainerPort, AgentError> {
        self.servers
            .call(|at| async move {
                let resp = self.post_refusable(&at, "containers", attach).await?;
                json_answer(resp).await
            })
            .await
    }

    /// Removes the port of a container's attachment; none is success.
    pub async fn detach_container(&self, key: &AttachmentKey) -> Result<Detached, AgentError> {
        self.servers
            .call(|at| async move {
                let resp = self.post_refusable(&at, "containers/detach", key).await?;
                json_answer(resp).await
            })
            .await
    }

    /// The container ports bound to this host.
    pub async fn container_attachments(&self) -> Result<Vec<Attachment>, AgentError> {
        self.servers
            .call(|at| async move {
                let url = format!("{}/containers", at.endpoint.base);
                let request = at.endpoint.http.get(url).timeout(self.request_timeout);
                let span = request_span("GET", "containers", &at);
                let resp = self.send(request).instrument(span).await?;
                json_answer(resp).await
            })
            .await
    }

    /// Opens the watch stream. With what the agent holds in `query` (its
    /// revision and digest) the server resumes instead of resending the
    /// whole view, whichever server the agent had before.
    pub async fn watch(&self, query: &WatchQuery) -> Result<WatchStream, AgentError> {
        self.servers
            .call(|at| async move {
                let url = format!("{}/watch{}", at.endpoint.base, query_string(query));
                let span = tracing::info_span!(
                    "agent_channel",
                    method = "GET",
                    path = "watch",
                    server = %at.endpoint.label,
                    since = query.since,
                    request_id = tracing::field::Empty
                );
                // Only the answer's start is timed here: the body is the
                // stream, timed by its silence.
                let answer = tokio::time::timeout(self.request_timeout, self.send(at.endpoint.http.get(url)));
                let resp = answer.instrument(span).await.map_err(|_| AgentError::Silent(self.request_timeout))??;
                Ok(WatchStream {
                    resp,
                    lines: Lines::default(),
                    silence: self.silence,
                    received: 0,
                    origin: Some((self.servers.clone(), at)),
                })
            })
            .await
    }

    async fn post<T: Serialize>(&self, at: &Attempt, path: &str, body: &T) -> Result<reqwest::Response, AgentError> {
        let request =
            at.endpoint.http.post(format!("{}/{path}", at.endpoint.base)).json(body).timeout(self.request_timeout);
        self.send(request).instrument(request_span("POST", path, at)).await
    }

    /// A POST whose refusals (400, 403, 409: what was asked cannot be
    /// done) are the caller's to report, not the channel's failures.
    async fn post_refusable<T: Serialize>(
        &self,
        at: &Attempt,
        path: &str,
        body: &T,
    ) -> Result<reqwest::Response, AgentError> {
        let request =
            at.endpoint.http.post(format!("{}/{path}", at.endpoint.base)).json(body).timeout(self.request_timeout);
        let resp = request
            .header(TOKEN_HEADER, &self.token)
            .send()
            .instrument(request_span("POST", path, at))
            .await
            .map_err(AgentError::Unreachable)?;
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

/// `{PREFIX}/hosts/{host}`: where a host's channel is on every server.
fn suffix(host: &str) -> String {
    format!("{PREFIX}/hosts/{host}")
}

fn http_settings() -> HttpSettings {
    HttpSettings { connect_timeout: CONNECT_TIMEOUT }
}

fn request_span(method: &'static str, path: &str, at: &Attempt) -> tracing::Span {
    tracing::info_span!(
        "agent_channel",
        method,
        path,
        server = %at.endpoint.label,
        request_id = tracing::field::Empty
    )
}

/// A JSON answer's body, decoded.
async fn json_answer<T: serde::de::DeserializeOwned>(resp: reqwest::Response) -> Result<T, AgentError> {
    let bytes = resp.bytes().await.map_err(AgentError::BadAnswer)?;
    serde_json::from_slice(&bytes).map_err(AgentError::BadEvent)
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
    /// The servers and the one this stream came from, until a failure of
    /// that server has moved the client on.
    origin: Option<(Arc<Servers>, Attempt)>,
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
            let chunk = match tokio::time::timeout(self.silence, self.resp.chunk()).await {
                Ok(Ok(chunk)) => chunk,
                Ok(Err(e)) => return Err(self.server_failed(AgentError::Unreachable(e))),
                Err(_) => return Err(self.server_failed(AgentError::Silent(self.silence))),
            };
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

impl WatchStream {
    /// A stream broken by its server (the connection lost, or silence)
    /// moves the client to the next server: the watch that follows, the
    /// heartbeats and the reports go there. A stream the server ended
    /// (it is stopping) does not: the next request finds out.
    fn server_failed(&mut self, error: AgentError) -> AgentError {
        if let Some((servers, attempt)) = self.origin.take() {
            servers.move_on(&attempt, &error);
        }
        error
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
