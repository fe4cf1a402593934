//! The servers an agent talks to, and which of them it talks to now.
//!
//! An agent is given one server URL or several (`URL1,URL2,...`); a URL
//! that names a host is looked up, and each of its addresses becomes a
//! place to send requests of its own (an *endpoint*: the URL as given, so
//! the `Host` header is unchanged, with the connection pinned to that
//! address). One endpoint is *current*, and every request goes there.
//!
//! A request the current endpoint fails as a server (no connection, a
//! reset, a timeout, a 5xx: [`AgentError::is_server_failure`]) is sent
//! again to the next endpoint, which becomes current, and so on until one
//! answers or each has been tried once; a refusal (401, 404, 409, 400:
//! the server answered, and another would answer the same) is the
//! caller's. The choice stays where it is while it answers (no round
//! robin), so the watch, the heartbeats and the reports of one agent go to
//! one server, and a server that comes back is not switched back to.
//!
//! Names are looked up before the first request and again after a
//! request that no endpoint answered, so a name that changed its
//! addresses is followed once the old ones fail.
//!
//! Every request of the agent channel may be sent twice: registration,
//! heartbeats, status reports are idempotent, and a container's port is
//! found by its attachment's key rather than made twice.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::agent::AgentError;

/// Looks up a host name's addresses (the system's resolver; a table in
/// tests).
pub(crate) type Lookup =
    Arc<dyn Fn(String, u16) -> Pin<Box<dyn Future<Output = std::io::Result<Vec<SocketAddr>>> + Send>> + Send + Sync>;

fn system_lookup() -> Lookup {
    Arc::new(|name, port| {
        Box::pin(async move { tokio::net::lookup_host((name.as_str(), port)).await.map(Iterator::collect) })
    })
}

/// One server URL, as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ServerUrl {
    /// As given, without a trailing slash (`http://controller:9696`).
    pub url: String,
    /// The host name and port to look up; `None` for an IP address.
    pub name: Option<(String, u16)>,
}

/// Splits `URL1,URL2,...` (blanks around commas ignored) and checks each.
pub(crate) fn parse_list(list: &str) -> Result<Vec<ServerUrl>, AgentError> {
    let bad = |reason: String| AgentError::BadServerList { list: list.to_string(), reason };
    let urls: Vec<ServerUrl> = list
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(|given| {
            let parsed = reqwest::Url::parse(given).map_err(|e| bad(format!("'{given}': {e}")))?;
            if !matches!(parsed.scheme(), "http" | "https") {
                return Err(bad(format!("'{given}' is not an http:// or https:// URL")));
            }
            if parsed.host_str().is_none_or(str::is_empty) {
                return Err(bad(format!("'{given}' names no host")));
            }
            let port = parsed.port_or_known_default().unwrap_or(80);
            let name = parsed.domain().map(|name| (name.to_string(), port));
            Ok(ServerUrl { url: given.trim_end_matches('/').to_string(), name })
        })
        .collect::<Result<_, _>>()?;
    if urls.is_empty() {
        return Err(bad("no server URL".into()));
    }
    Ok(urls)
}

/// How every endpoint's HTTP client is built.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HttpSettings {
    pub connect_timeout: Duration,
}

/// One place requests can go: a server URL, pinned to one of its name's
/// addresses when it names a host whose name could be looked up.
pub(crate) struct Endpoint {
    /// Index of its URL in the configured list.
    server: usize,
    /// The address a name was resolved to.
    addr: Option<SocketAddr>,
    pub http: reqwest::Client,
    /// `{url}{suffix}`: where the host's channel lives on this server.
    pub base: String,
    /// The URL, and the address when pinned: what logs say.
    pub label: String,
}

impl Endpoint {
    fn new(
        urls: &[ServerUrl],
        server: usize,
        addr: Option<SocketAddr>,
        suffix: &str,
        settings: HttpSettings,
    ) -> Result<Endpoint, AgentError> {
        let url = &urls[server];
        let mut builder = reqwest::Client::builder().connect_timeout(settings.connect_timeout).tcp_nodelay(true);
        if let (Some(addr), Some((name, _))) = (addr, &url.name) {
            // The URL, its host name and so the Host header stay as given;
            // only where the connection goes is fixed.
            builder = builder.resolve(name, addr);
        }
        let http = builder.build().map_err(AgentError::Build)?;
        let label = match addr {
            Some(addr) => format!("{} ({addr})", url.url),
            None => url.url.clone(),
        };
        Ok(Endpoint { server, addr, http, base: format!("{}{suffix}", url.url), label })
    }
}

/// Where one try of a request went, to move on from it when it fails.
#[derive(Clone)]
pub(crate) struct Attempt {
    generation: u64,
    index: usize,
    /// How many endpoints that generation has.
    count: usize,
    pub endpoint: Arc<Endpoint>,
}

struct State {
    endpoints: Arc<[Arc<Endpoint>]>,
    current: usize,
    /// Changes with every new list of endpoints.
    generation: u64,
    /// Look the names up before the next request.
    stale: bool,
}

/// The configured servers, their endpoints and the current one.
pub(crate) struct Servers {
    urls: Vec<ServerUrl>,
    suffix: String,
    settings: HttpSettings,
    lookup: Lookup,
    state: Mutex<State>,
    /// One lookup at a time.
    looking_up: tokio::sync::Mutex<()>,
}

impl Servers {
    /// `suffix` is appended to each URL to make an endpoint's `base`.
    pub fn new(list: &str, suffix: String, settings: HttpSettings) -> Result<Servers, AgentError> {
        Self::with_lookup(list, suffix, settings, system_lookup())
    }

    pub(crate) fn with_lookup(
        list: &str,
        suffix: String,
        settings: HttpSettings,
        lookup: Lookup,
    ) -> Result<Servers, AgentError> {
        let urls = parse_list(list)?;
        // Before the first lookup: each URL as it is, which the HTTP
        // client resolves itself.
        let endpoints = (0..urls.len())
            .map(|i| Endpoint::new(&urls, i, None, &suffix, settings).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()?;
        let stale = urls.iter().any(|u| u.name.is_some());
        Ok(Servers {
            urls,
            suffix,
            settings,
            lookup,
            state: Mutex::new(State { endpoints: endpoints.into(), current: 0, generation: 0, stale }),
            looking_up: tokio::sync::Mutex::new(()),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The current endpoint, as logs name it.
    pub fn current(&self) -> String {
        let state = self.state();
        state.endpoints[state.current].label.clone()
    }

    /// Every endpoint, in the order they are tried, as logs name them.
    pub fn endpoints(&self) -> Vec<String> {
        self.state().endpoints.iter().map(|e| e.label.clone()).collect()
    }

    /// Runs `op` on the current endpoint and, while it fails as a server,
    /// on the next ones, each once at most. The last failure is returned
    /// when none answered.
    pub async fn call<T, F, Fut>(&self, mut op: F) -> Result<T, AgentError>
    where
        F: FnMut(Attempt) -> Fut,
        Fut: Future<Output = Result<T, AgentError>>,
    {
        self.look_up_if_stale().await;
        let (generation, endpoints, mut index) = {
            let state = self.state();
            (state.generation, state.endpoints.clone(), state.current)
        };
        let mut tried = 0;
        loop {
            let attempt = Attempt { generation, index, count: endpoints.len(), endpoint: endpoints[index].clone() };
            let error = match op(attempt.clone()).await {
                Err(e) if e.is_server_failure() => e,
                answered => return answered,
            };
            tried += 1;
            if tried >= endpoints.len() {
                self.none_answered(generation);
                return Err(error);
            }
            index = self.move_on(&attempt, &error);
        }
    }

    /// `attempt` failed as a server: the next endpoint becomes current,
    /// unless a request that failed there too moved on already. Returns the
    /// index of the endpoint after `attempt`'s (in `attempt`'s list: a new
    /// lookup may have made another since).
    pub fn move_on(&self, attempt: &Attempt, error: &AgentError) -> usize {
        let mut state = self.state();
        let next = (attempt.index + 1) % attempt.count;
        if state.generation == attempt.generation && state.current == attempt.index && next != attempt.index {
            state.current = next;
            tracing::warn!(
                from = %attempt.endpoint.label,
                to = %state.endpoints[next].label,
                error = %error,
                "agent channel: switching to another server"
            );
        }
        next
    }

    /// No endpoint answered: names are looked up again before the next
    /// request (their addresses may have changed).
    fn none_answered(&self, generation: u64) {
        let mut state = self.state();
        if state.generation == generation && self.urls.iter().any(|u| u.name.is_some()) {
            state.stale = true;
        }
    }

    async fn look_up_if_stale(&self) {
        if !self.state().stale {
            return;
        }
        let _one = self.looking_up.lock().await;
        if !self.state().stale {
            return;
        }
        let mut wanted: Vec<(usize, Option<SocketAddr>)> = Vec::new();
        for (i, url) in self.urls.iter().enumerate() {
            let Some((name, port)) = &url.name else {
                wanted.push((i, None));
                continue;
            };
            match (self.lookup)(name.clone(), *port).await {
                Ok(addrs) if !addrs.is_empty() => {
                    for addr in addrs {
                        if !wanted.contains(&(i, Some(addr))) {
                            wanted.push((i, Some(addr)));
                        }
                    }
                }
                Ok(_) => {
                    tracing::warn!(server = %url.url, "the server's name has no address");
                    wanted.push((i, None));
                }
                Err(e) => {
                    tracing::warn!(server = %url.url, error = %e, "cannot look the server's name up");
                    wanted.push((i, None));
                }
            }
        }
        let mut state = self.state();
        let current = (state.endpoints[state.current].server, state.endpoints[state.current].addr);
        let mut endpoints = Vec::with_capacity(wanted.len());
        for (server, addr) in wanted {
            // The endpoints that stay keep their connections.
            let kept = state.endpoints.iter().find(|e| e.server == server && e.addr == addr).cloned();
            let endpoint = match kept {
                Some(e) => e,
                None => match Endpoint::new(&self.urls, server, addr, &self.suffix, self.settings) {
                    Ok(e) => Arc::new(e),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot make an HTTP client; keeping the servers as they were");
                        return;
                    }
                },
            };
            endpoints.push(endpoint);
        }
        // The same endpoint stays current, or else the first of its URL.
        let index = endpoints
            .iter()
            .position(|e| (e.server, e.addr) == current)
            .or_else(|| endpoints.iter().position(|e| e.server == current.0))
            .unwrap_or(0);
        let changed = endpoints.len() != state.endpoints.len()
            || endpoints.iter().zip(state.endpoints.iter()).any(|(a, b)| !Arc::ptr_eq(a, b));
        if changed {
            tracing::info!(servers = ?endpoints.iter().map(|e| &e.label).collect::<Vec<_>>(), "agent channel servers");
            state.endpoints = endpoints.into();
            state.generation += 1;
        }
        state.current = index;
        state.stale = false;
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::HashMap;
    use std::net::IpAddr;

    use super::*;

    #[test]
    fn a_list_is_split_at_commas_and_each_url_checked() {
        let urls = parse_list(" http://10.0.0.1:9696/ , http://controller:9696,,https://[fd00::1]").unwrap();
        assert_eq!(
            urls,
            vec![
                ServerUrl { url: "http://10.0.0.1:9696".into(), name: None },
                ServerUrl { url: "http://controller:9696".into(), name: Some(("controller".into(), 9696)) },
                ServerUrl { url: "https://[fd00::1]".into(), name: None },
            ]
        );
        assert_eq!(parse_list("http://c").unwrap()[0].name, Some(("c".into(), 80)));
        for bad in ["", " , ", "controller:9696", "ftp://c", "http://", "http://a,nonsense"] {
            let err = parse_list(bad).unwrap_err();
            assert!(matches!(err, AgentError::BadServerList { .. }), "{bad}: {err}");
        }
    }

    /// Names and their addresses, changed by the test as it goes.
    pub(crate) type Table = Arc<Mutex<HashMap<String, Vec<IpAddr>>>>;

    pub(crate) fn table_lookup(table: &Table) -> Lookup {
        let table = table.clone();
        Arc::new(move |name, port| {
            let found = table.lock().unwrap().get(&name).cloned();
            let found = found.map(|ips| ips.into_iter().map(|ip| SocketAddr::new(ip, port)).collect());
            Box::pin(async move { found.ok_or_else(|| std::io::Error::other("no such name")) })
        })
    }

    fn table(entries: &[(&str, &[&str])]) -> Table {
        let map = entries.iter().map(|(n, ips)| (n.to_string(), ips.iter().map(|a| a.parse().unwrap()).collect()));
        Arc::new(Mutex::new(map.collect()))
    }

    fn servers(list: &str, lookup: Lookup) -> Servers {
        let settings = HttpSettings { connect_timeout: Duration::from_secs(1) };
        Servers::with_lookup(list, "/agent/v1/hosts/h".into(), settings, lookup).unwrap()
    }

    /// The current endpoint's attempt, as `call` makes it.
    fn attempt(s: &Servers) -> Attempt {
        let state = s.state();
        Attempt {
            generation: state.generation,
            index: state.current,
            count: state.endpoints.len(),
            endpoint: state.endpoints[state.current].clone(),
        }
    }

    #[tokio::test]
    async fn a_name_becomes_one_endpoint_per_address_and_the_current_one_survives_a_new_lookup() {
        let names = table(&[("a.test", &["10.0.0.1", "10.0.0.2", "10.0.0.1"])]);
        let s = servers("http://a.test:9696,http://10.0.0.9:9696,http://gone.test", table_lookup(&names));
        assert_eq!(s.endpoints(), ["http://a.test:9696", "http://10.0.0.9:9696", "http://gone.test"]);
        s.look_up_if_stale().await;
        // Each address once; a name that cannot be looked up stays a URL.
        let a2 = "http://a.test:9696 (10.0.0.2:9696)";
        assert_eq!(
            s.endpoints(),
            ["http://a.test:9696 (10.0.0.1:9696)", a2, "http://10.0.0.9:9696", "http://gone.test"]
        );
        assert_eq!(s.state().endpoints[0].base, "http://a.test:9696/agent/v1/hosts/h");
        s.move_on(&attempt(&s), &AgentError::Unavailable);
        assert_eq!(s.current(), a2);

        // Looked up again (after a round that no endpoint answered): the
        // current endpoint stays current, wherever it now is in the list.
        names.lock().unwrap().insert("a.test".into(), vec!["10.0.0.3".parse().unwrap(), "10.0.0.2".parse().unwrap()]);
        s.state().stale = true;
        let kept = s.state().endpoints[1].clone();
        s.look_up_if_stale().await;
        assert_eq!(s.endpoints()[..2], ["http://a.test:9696 (10.0.0.3:9696)".to_string(), a2.to_string()]);
        assert_eq!(s.current(), a2);
        assert!(Arc::ptr_eq(&s.state().endpoints[1], &kept), "an endpoint that stays keeps its connections");
        // A request still on the old list fails: the choice stays, and the
        // request goes on in its own list.
        let old = Attempt { generation: 0, index: 3, count: 4, endpoint: kept.clone() };
        assert_eq!(s.move_on(&old, &AgentError::Unavailable), 0);
        assert_eq!(s.current(), a2);
        // Its address gone: the first of its URL.
        names.lock().unwrap().insert("a.test".into(), vec!["10.0.0.4".parse().unwrap()]);
        s.state().stale = true;
        s.look_up_if_stale().await;
        assert_eq!(s.current(), "http://a.test:9696 (10.0.0.4:9696)");
    }

    #[test]
    fn failures_move_the_choice_once_and_only_from_the_current_endpoint() {
        let s = servers("http://10.0.0.1,http://10.0.0.2,http://10.0.0.3", table_lookup(&table(&[])));
        let on_first = attempt(&s);
        // Two requests fail on the first at once: the choice moves once,
        // and both try the second next.
        assert_eq!(s.move_on(&on_first, &AgentError::Unavailable), 1);
        assert_eq!(s.move_on(&on_first, &AgentError::Unavailable), 1);
        assert_eq!(s.current(), "http://10.0.0.2");
        // A stream that breaks on the second moves on to the third, which
        // stays current; the first failing again changes nothing.
        s.move_on(&attempt(&s), &AgentError::Unavailable);
        assert_eq!(s.current(), "http://10.0.0.3");
        s.move_on(&on_first, &AgentError::Unavailable);
        assert_eq!(s.current(), "http://10.0.0.3");
        // After the last comes the first.
        s.move_on(&attempt(&s), &AgentError::Unavailable);
        assert_eq!(s.current(), "http://10.0.0.1");

        let one = servers("http://10.0.0.1", table_lookup(&table(&[])));
        assert_eq!(one.move_on(&attempt(&one), &AgentError::Unavailable), 0);
        assert_eq!(one.current(), "http://10.0.0.1");
    }

    /// A name with two addresses, the first dead: requests go to the
    /// second, under the name as given (the `Host` header).
    #[tokio::test]
    async fn each_address_of_a_name_is_tried_with_the_url_kept() {
        let listener = match tokio::net::TcpListener::bind("127.0.0.2:0").await {
            Ok(l) => l,
            Err(e) => return eprintln!("skipped: no 127.0.0.2 here ({e})"),
        };
        let port = listener.local_addr().unwrap().port();
        let hosts = Arc::new(Mutex::new(Vec::<String>::new()));
        let seen = hosts.clone();
        let router = axum::Router::new().fallback(move |headers: axum::http::HeaderMap| {
            let seen = seen.clone();
            async move {
                let host = headers.get("host").and_then(|h| h.to_str().ok()).unwrap_or_default().to_string();
                seen.lock().unwrap().push(host);
                axum::http::StatusCode::NO_CONTENT
            }
        });
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });

        let names = table(&[("agents.test", &["127.0.0.1", "127.0.0.2"])]);
        let url = format!("http://agents.test:{port}");
        let agent = crate::AgentClient::with_lookup(&url, "h", "t", table_lookup(&names)).unwrap();
        agent.heartbeat(&Default::default()).await.expect("the second address answers");
        assert_eq!(agent.servers(), [format!("{url} (127.0.0.1:{port})"), format!("{url} (127.0.0.2:{port})")]);
        assert_eq!(agent.current_server(), format!("{url} (127.0.0.2:{port})"));
        assert_eq!(*hosts.lock().unwrap(), [format!("agents.test:{port}")]);
    }
}
