//! Loopback ports held for a test: refused ones, and free ones reserved for a server that is
//! told its port.

use std::net::SocketAddr;

use tokio::net::TcpSocket;

/// A loopback address where connects are refused, for as long as this lives: a socket bound to
/// the port and never listening. Unlike a port freed after use, no other test can take it (the
/// socket has no SO_REUSEADDR, so no bind to port 0 lands there), and unlike a listener that
/// never accepts, the kernel refuses connects at once.
pub struct ClosedPort {
    addr: SocketAddr,
    _socket: TcpSocket,
}

impl ClosedPort {
    /// A fresh closed port.
    pub fn new() -> ClosedPort {
        ClosedPort::bind("127.0.0.1:0".parse().unwrap(), false)
    }

    /// Holds the port of a listening backend, so that it stays taken once the backend stops.
    pub(super) fn beside(addr: SocketAddr) -> ClosedPort {
        ClosedPort::bind(addr, true)
    }

    fn bind(addr: SocketAddr, reuseport: bool) -> ClosedPort {
        let socket = TcpSocket::new_v4().expect("socket");
        socket.set_reuseport(reuseport).expect("SO_REUSEPORT");
        socket
            .bind(addr)
            .unwrap_or_else(|e| panic!("hold {addr}: {e}"));
        let addr = socket.local_addr().expect("bound address");
        ClosedPort {
            addr,
            _socket: socket,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl std::fmt::Display for ClosedPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.addr.fmt(f)
    }
}

/// A free loopback port for a server that is told a port number instead of being handed a
/// listener (alb's TLS listener with `redirect_http`, chromedriver, HAProxy): a socket bound to
/// it with SO_REUSEADDR and never listening. The server, binding with SO_REUSEADDR too, can
/// listen there; a bind to port 0 elsewhere does not land there. Keep it until the server
/// listens.
pub struct ReservedPort {
    port: u16,
    _socket: TcpSocket,
}

impl ReservedPort {
    pub fn new() -> ReservedPort {
        let socket = TcpSocket::new_v4().expect("socket");
        socket.set_reuseaddr(true).expect("SO_REUSEADDR");
        socket
            .bind("127.0.0.1:0".parse().unwrap())
            .expect("bind a free port");
        let port = socket.local_addr().expect("bound address").port();
        ReservedPort {
            port,
            _socket: socket,
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }
}

impl std::ops::Deref for ClosedPort {
    type Target = SocketAddr;
    fn deref(&self) -> &SocketAddr {
        &self.addr
    }
}
