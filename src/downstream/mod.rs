//! The client side: listeners and the connections accepted on them. Each connection goes through
//! the [`detect`]or (PROXY protocol header, HTTP/2 preface; over TLS, ALPN in [`tls`]) to the room
//! of the protocol it speaks, [`h1`] or [`h2`], which turns wire into requests for the proxy and
//! its replies back into wire. A new client protocol is one more room here.

mod accept;
mod connection;
mod detect;
mod h1;
mod h1_write;
mod h2;
pub mod proxy_protocol;
mod shutdown;
pub mod tls;

pub use accept::{Acceptor, listen};
pub use connection::{ConnSettings, Seat};
pub use detect::serve_connection;
pub use shutdown::Shutdown;
