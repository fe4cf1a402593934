//! A TCP and UDP echo server for the lab's `external` namespace (an
//! Internet host beyond the routers), and a client for any lab namespace.
//! The server records the peer address of every connection and datagram,
//! which is what tests of routing and NAT look at (what did the far end
//! see?).
//!
//! Both run as `neutrino lab echo-server` / `neutrino lab echo-client`
//! (hidden commands) so a lab needs no tool beyond its own binary: busybox
//! `nc` can neither bind a source address nor speak UDP, and socat is not
//! everywhere. [`crate::Lab::echo_start`] starts a server detached with a
//! pid file in the run directory, so `lab down` (and the stale-lab reaper)
//! stop it like the daemons; it also runs inside a lab namespace, whose
//! processes teardown kills anyway.
//!
//! The log, one line per event: `listening PORT`, then `tcp PEER` or
//! `udp PEER` (a socket address, IPv4-mapped peers shown as IPv4).

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::Path;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use socket2::{Domain, Protocol as SockProtocol, Socket, Type};

/// Largest datagram echoed; larger ones are cut.
const MAX_DATAGRAM: usize = 65_535;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, clap::ValueEnum)]
pub enum EchoProtocol {
    Tcp,
    Udp,
}

impl fmt::Display for EchoProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EchoProtocol::Tcp => "tcp",
            EchoProtocol::Udp => "udp",
        })
    }
}

impl FromStr for EchoProtocol {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "tcp" => Ok(EchoProtocol::Tcp),
            "udp" => Ok(EchoProtocol::Udp),
            _ => Err(format!("not tcp or udp: {s:?}")),
        }
    }
}

/// A peer the server saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EchoPeer {
    pub protocol: EchoProtocol,
    pub addr: SocketAddr,
}

/// The peers in a server's log, in the order they came.
pub fn parse_log(text: &str) -> Vec<EchoPeer> {
    text.lines()
        .filter_map(|line| {
            let (protocol, addr) = line.split_once(' ')?;
            Some(EchoPeer { protocol: protocol.parse().ok()?, addr: addr.trim().parse().ok()? })
        })
        .collect()
}

/// Whether the log says the server listens.
pub fn log_says_listening(text: &str) -> bool {
    text.lines().any(|l| l.starts_with("listening "))
}

/// IPv4-mapped peers of a dual-stack socket as plain IPv4.
fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

struct Log(Mutex<std::fs::File>);

impl Log {
    fn line(&self, line: &str) {
        let mut file = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let _ = writeln!(file, "{line}");
        let _ = file.flush();
    }
}

/// `::` listens on IPv4 too.
pub const ANY: IpAddr = IpAddr::V6(Ipv6Addr::UNSPECIFIED);

fn bound(kind: Type, protocol: SockProtocol, addr: SocketAddr) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), kind, Some(protocol))?;
    if addr.is_ipv6() {
        socket.set_only_v6(!addr.ip().is_unspecified())?;
    }
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    Ok(socket)
}

/// Serves TCP and UDP echo on `listen`:`port` ([`ANY`]: every address,
/// IPv4 and IPv6), appending to `log`; runs until killed.
pub fn serve(listen: IpAddr, port: u16, log: &Path) -> io::Result<()> {
    let file = std::fs::File::options().create(true).append(true).open(log)?;
    let log = Arc::new(Log(Mutex::new(file)));
    let addr = SocketAddr::new(listen, port);
    let tcp = bound(Type::STREAM, SockProtocol::TCP, addr)?;
    tcp.listen(64)?;
    let tcp: TcpListener = tcp.into();
    let udp: UdpSocket = bound(Type::DGRAM, SockProtocol::UDP, addr)?.into();
    log.line(&format!("listening {port}"));

    let udp_log = log.clone();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        loop {
            match udp.recv_from(&mut buf) {
                Ok((len, peer)) => {
                    udp_log.line(&format!("udp {}", canonical(peer)));
                    let _ = udp.send_to(&buf[..len], peer);
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    });
    loop {
        match tcp.accept() {
            Ok((stream, peer)) => {
                log.line(&format!("tcp {}", canonical(peer)));
                std::thread::spawn(move || echo_stream(stream));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

fn echo_stream(mut stream: TcpStream) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(60)));
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if stream.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
        }
    }
}

/// Sends `message` to the echo server at `to` (from `from`, when given)
/// and returns what came back, within `timeout`.
pub fn ask(
    protocol: EchoProtocol,
    to: SocketAddr,
    from: Option<IpAddr>,
    message: &[u8],
    timeout: Duration,
) -> io::Result<Vec<u8>> {
    let domain = if to.is_ipv6() { Domain::IPV6 } else { Domain::IPV4 };
    let (kind, proto) = match protocol {
        EchoProtocol::Tcp => (Type::STREAM, SockProtocol::TCP),
        EchoProtocol::Udp => (Type::DGRAM, SockProtocol::UDP),
    };
    let socket = Socket::new(domain, kind, Some(proto))?;
    if let Some(from) = from {
        socket.bind(&SocketAddr::new(from, 0).into())?;
    }
    socket.set_read_timeout(Some(timeout))?;
    socket.set_write_timeout(Some(timeout))?;
    match protocol {
        EchoProtocol::Tcp => {
            socket.connect_timeout(&to.into(), timeout)?;
            let mut stream: TcpStream = socket.into();
            stream.write_all(message)?;
            stream.shutdown(std::net::Shutdown::Write)?;
            let mut reply = Vec::new();
            stream.read_to_end(&mut reply)?;
            Ok(reply)
        }
        EchoProtocol::Udp => {
            let udp: UdpSocket = socket.into();
            udp.connect(to)?;
            udp.send(message)?;
            let mut buf = vec![0u8; MAX_DATAGRAM];
            let n = udp.recv(&mut buf)?;
            buf.truncate(n);
            Ok(buf)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_parses_back() {
        let text = "listening 7\ntcp 192.0.2.1:4000\nudp [2001:db8:1::5]:5353\ngarbage\n";
        assert!(log_says_listening(text));
        assert_eq!(
            parse_log(text),
            [
                EchoPeer { protocol: EchoProtocol::Tcp, addr: "192.0.2.1:4000".parse().unwrap() },
                EchoPeer { protocol: EchoProtocol::Udp, addr: "[2001:db8:1::5]:5353".parse().unwrap() },
            ]
        );
        assert!(!log_says_listening(""));
    }

    #[test]
    fn mapped_peers_are_shown_as_ipv4() {
        let mapped: SocketAddr = "[::ffff:192.0.2.1]:80".parse().unwrap();
        assert_eq!(canonical(mapped), "192.0.2.1:80".parse().unwrap());
    }

    /// On 127.0.0.1 only of whatever namespace runs the tests: nothing
    /// listens on, or leaves by, a real interface.
    #[test]
    fn the_server_echoes_and_records_its_peers() {
        let dir = std::env::temp_dir().join(format!("neutrino-echo-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("echo.log");
        // A free port: bind 0, read it, release it.
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let log2 = log.clone();
        std::thread::spawn(move || serve(IpAddr::from([127, 0, 0, 1]), port, &log2));
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !log_says_listening(&std::fs::read_to_string(&log).unwrap_or_default()) {
            assert!(std::time::Instant::now() < deadline, "server not listening");
            std::thread::sleep(Duration::from_millis(20));
        }
        let to: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let t = Duration::from_secs(5);
        assert_eq!(ask(EchoProtocol::Tcp, to, None, b"hello", t).unwrap(), b"hello");
        assert_eq!(ask(EchoProtocol::Udp, to, Some("127.0.0.1".parse().unwrap()), b"world", t).unwrap(), b"world");
        let peers = parse_log(&std::fs::read_to_string(&log).unwrap());
        assert_eq!(peers.iter().map(|p| p.protocol).collect::<Vec<_>>(), [EchoProtocol::Tcp, EchoProtocol::Udp]);
        assert!(peers.iter().all(|p| p.addr.ip() == IpAddr::from([127, 0, 0, 1])), "{peers:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
