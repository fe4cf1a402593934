//! The agent's side of the agent channel: register, watch the host view,
//! heartbeat, report port status (see `neutrino_proto`). Thin on purpose:
//! HTTP in, typed messages and typed failures out, no policy.

use std::time::Duration;

use neutrino_proto::{
    CONTRACT_VERSION, Heartbeat, KEEPALIVE_SECS, PREFIX, PortStatusReport, Registered, Registration, TOKEN_HEADER,
    WatchEvent, WatchQuery,
};
use tracing::Instrument;

/// The header the server answers every request with.
const REQUEST_ID_HEADER: &str = "x-openstack-request-id";

#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    #[error("cannot reach the server: {0}")]
    Unreachable(#[source] reqwest::Error),
    /// The server is up but not serving views yet (it is starting, or
    /// computing views after a restart): keep the view and try again.
    #[error("the server is not ready yet (503)")]
    Unavailable,
    /// The server does not know this host: register again.
    #[error("the server does not know this host")]
    NotRegistered,
    #[error("the server refused the agent token")]
    Unauthorized,
    /// Agent and server speak different versions of the contract: nothing
    /// either says can be trusted to mean the same to the other.
    #[error(
        "the server speaks another agent contract (agent: version {agent}, server: {}): {message}",
        server.map_or_else(|| "unknown version".to_string(), |v| format!("version {v}"))
    )]
    ContractMismatch { agent: u32, server: Option<u32>, message: String },
    #[error("server answered {status}: {body}")]
    Server { status: u16, body: String },
    #[error("the watch stream ended")]
    StreamEnded,
    #[error("the watch stream was silent for {0:?}")]
    Silent(Duration),
    #[error("bad answer from the server: {0}")]
    BadAnswer(#[source] reqwest::Error),
    /// An event or an answer that does not parse.
    #[error("bad event from the server: {0}")]
    BadEvent(#[source] serde_json::Error),
}

impl ChannelError {
    /// Whether the server is there but refuses the agent for good, until
    /// one of them is upgraded.
    pub fn is_contract_mismatch(&self) -> bool {
        matches!(self, ChannelError::ContractMismatch { .. })
    }
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
            .map_err(ChannelError::Unreachable)?;
        let base = format!("{}{PREFIX}/hosts/{host}", server_url.trim_end_matches('/'));
        Ok(ChannelClient { http, base, token: token.to_string() })
    }

    async fn post<T: serde::Serialize>(&self, path: &str, body: &T) -> Result<reqwest::Response, ChannelError> {
        let request = self.http.post(format!("{}/{path}", self.base)).json(body).timeout(REQUEST_TIMEOUT);
        self.send(request)
            .instrument(tracing::info_span!("agent_channel", method = "POST", path, request_id = tracing::field::Empty))
            .await
    }

    /// Sends with the credential, records the server's request id in the
    /// current span, and maps failure statuses.
    async fn send(&self, request: reqwest::RequestBuilder) -> Result<reqwest::Response, ChannelError> {
        let resp = request.header(TOKEN_HEADER, &self.token).send().await.map_err(ChannelError::Unreachable)?;
        if let Some(id) = resp.headers().get(REQUEST_ID_HEADER).and_then(|v| v.to_str().ok()) {
            tracing::Span::current().record("request_id", id);
        }
        tracing::debug!(status = resp.status().as_u16(), "agent channel answer");
        check(resp).await
    }

    /// Registers, and refuses a server of another contract version.
    pub async fn register(&self, registration: &Registration) -> Result<Registered, ChannelError> {
        let body = self.post("register", registration).await?.bytes().await.map_err(ChannelError::BadAnswer)?;
        registered(&body)
    }

    pub async fn heartbeat(&self, beat: &Heartbeat) -> Result<(), ChannelError> {
        self.post("heartbeat", beat).await.map(|_| ())
    }

    pub async fn report_ports(&self, report: &PortStatusReport) -> Result<(), ChannelError> {
        self.post("ports/status", report).await.map(|_| ())
    }

    /// Opens the watch stream. With `query.since` and `query.digest` the
    /// server resumes when what the agent holds is current.
    pub async fn watch(&self, query: &WatchQuery) -> Result<WatchStream, ChannelError> {
        let url = format!("{}/watch{}", self.base, query_string(query));
        let span = tracing::info_span!(
            "agent_channel",
            method = "GET",
            path = "watch",
            since = query.since,
            request_id = tracing::field::Empty
        );
        let resp = self.send(self.http.get(url)).instrument(span).await?;
        Ok(WatchStream { resp, buf: Vec::new() })
    }
}

/// The answer to a registration, checked for the contract version first:
/// a server of another version may answer in another shape. Servers of
/// version 1 answered without one.
fn registered(body: &[u8]) -> Result<Registered, ChannelError> {
    let value: serde_json::Value = serde_json::from_slice(body).map_err(ChannelError::BadEvent)?;
    let server = value.get("contract").map_or(Some(1), |v| v.as_u64().and_then(|v| u32::try_from(v).ok()));
    if server != Some(CONTRACT_VERSION) {
        return Err(ChannelError::ContractMismatch {
            agent: CONTRACT_VERSION,
            server,
            message: "the registration was answered in another version".into(),
        });
    }
    serde_json::from_value(value).map_err(ChannelError::BadEvent)
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

async fn check(resp: reqwest::Response) -> Result<reqwest::Response, ChannelError> {
    match resp.status().as_u16() {
        200..=299 => Ok(resp),
        401 => Err(ChannelError::Unauthorized),
        404 => Err(ChannelError::NotRegistered),
        409 => {
            let body = resp.text().await.unwrap_or_default();
            Err(ChannelError::ContractMismatch {
                agent: CONTRACT_VERSION,
                server: None,
                message: neutron_message(&body),
            })
        }
        503 => Err(ChannelError::Unavailable),
        status => Err(ChannelError::Server { status, body: resp.text().await.unwrap_or_default() }),
    }
}

/// The `message` of a `{"NeutronError": {...}}` body, or the body itself.
fn neutron_message(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("NeutronError")?.get("message")?.as_str().map(str::to_string))
        .unwrap_or_else(|| body.to_string())
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
                return serde_json::from_slice(&line).map_err(ChannelError::BadEvent);
            }
            let chunk = tokio::time::timeout(silence, self.resp.chunk())
                .await
                .map_err(|_| ChannelError::Silent(silence))?
                .map_err(ChannelError::Unreachable)?;
            match chunk {
                Some(bytes) => self.buf.extend_from_slice(&bytes),
                None => return Err(ChannelError::StreamEnded),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let ok = registered(br#"{"contract": 2, "heartbeat_interval_secs": 10}"#).unwrap();
        assert_eq!(ok, Registered { contract: 2, heartbeat_interval_secs: 10 });
        // Version 1 servers answered with a revision and no version.
        let v1 = registered(br#"{"revision": 5, "heartbeat_interval_secs": 10}"#).unwrap_err();
        assert!(matches!(v1, ChannelError::ContractMismatch { agent: 2, server: Some(1), .. }), "{v1}");
        let v3 = registered(br#"{"contract": 3, "something": "else"}"#).unwrap_err();
        assert!(matches!(v3, ChannelError::ContractMismatch { server: Some(3), .. }), "{v3}");
        assert!(v3.to_string().contains("agent: version 2, server: version 3"), "{v3}");
        assert!(matches!(registered(b"not json"), Err(ChannelError::BadEvent(_))));
    }

    #[test]
    fn a_contract_refusal_says_what_the_server_said() {
        let body = r#"{"NeutronError": {"type": "Conflict", "message": "agent contract 1 is not 2", "detail": ""}}"#;
        assert_eq!(neutron_message(body), "agent contract 1 is not 2");
        assert_eq!(neutron_message("plain text"), "plain text");
    }
}
