//! Property tests over generated inputs: the config loader, header hygiene and the balancers.
//!
//! Every block keeps proptest's default of 256 cases or fewer and turns failure persistence off, so
//! the file runs in a few seconds and never writes regression files next to the sources.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use alb::Config;
use alb::balance::{Exclude, selector_for};
use alb::config::{Algorithm, BackendAddr, BackendSpec, MAX_WEIGHT};
use alb::http1::{BodyFraming, parse_response_head};
use alb::proxy::Scheme;
use alb::proxy::remove_hop_by_hop;
use alb::upstream::{Backend, InFlightGuard};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::Config as ProptestConfig;

mod balancers;
mod config_loader;
mod header_hygiene;

fn cases(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}
