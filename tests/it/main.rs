//! alb's integration tests, one crate with a module per topic. Every test talks to real things on
//! loopback: real backends, alb in-process or as the real binary, real clients.

mod admin_host;
mod balancing;
mod cli;
mod config;
mod deploy;
mod grpc;
mod h2c_preface;
mod health;
mod http2;
mod limits_and_timeouts;
mod mtls;
mod ops;
mod properties;
mod proxy_protocol;
mod proxying;
mod retries;
mod routing;
mod shared_state;
mod smuggling;
mod support;
mod tls;
mod tls_edge;
mod tracing;
mod websocket;
