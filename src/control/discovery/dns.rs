//! The DNS side of discovery: the resolver, and one lookup of a name's addresses (A/AAAA) or of
//! an SRV name's targets.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RData;

use super::found::Found;
use crate::config::DiscoveryConfig;

/// How long one lookup may take (per name server try).
pub(super) const LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);

/// Most backends one source may bring (each with its health check): whoever answers for the
/// name must not be able to grow the pool without bound.
pub const MAX_ADDRESSES_PER_NAME: usize = 256;

/// One answer: what was found, and until when it is valid.
pub(super) type Answer = Result<(Vec<Found>, Instant), String>;

/// One lookup of `name`'s addresses, sorted.
pub(super) async fn addresses(resolver: &TokioResolver, name: &str) -> Answer {
    let lookup = resolver.lookup_ip(name).await.map_err(|e| e.to_string())?;
    let addrs: BTreeSet<IpAddr> = lookup.iter().collect();
    let found = addrs.into_iter().map(Found::address).collect();
    Ok((capped(name, found), lookup.valid_until()))
}

/// One lookup of an SRV name: each target of the lowest priority at its port and with its
/// weight, those of the next priority as backups (RFC 2782 has clients try priorities in order;
/// later ones are not used while these answer); each target resolved to its addresses. A
/// target that does not resolve is left out; the answer fails only when none resolves.
pub(super) async fn service(resolver: &TokioResolver, name: &str) -> Answer {
    // Fully qualified: an SRV name is never one of the search domains' (with Kubernetes'
    // `ndots:5`, a relative one would be asked under each of them first).
    let fqdn = format!("{name}.");
    let lookup = resolver
        .srv_lookup(fqdn.as_str())
        .await
        .map_err(|e| e.to_string())?;
    let mut valid_until = lookup.valid_until();
    let records: Vec<_> = lookup
        .answers()
        .iter()
        .filter_map(|record| match &record.data {
            RData::SRV(srv) => Some(srv.clone()),
            _ => None,
        })
        // RFC 2782: a target of "." means the service is decidedly not available here; port 0
        // is nothing to connect to.
        .filter(|srv| !srv.target.is_root() && srv.port != 0)
        .collect();
    let priorities: BTreeSet<u16> = records.iter().map(|srv| srv.priority).collect();
    let mut tiers = priorities.into_iter();
    let (Some(first), second) = (tiers.next(), tiers.next()) else {
        return Err("no SRV targets".into());
    };
    let mut targets = tokio::task::JoinSet::new();
    for srv in records {
        let backup = match srv.priority {
            p if p == first => false,
            p if Some(p) == second => true,
            _ => continue,
        };
        let resolver = resolver.clone();
        targets.spawn(async move {
            // Asked as the absolute name it is; known (Host, SNI) without the final dot.
            let absolute = srv.target.to_ascii();
            let host = absolute.trim_end_matches('.').to_string();
            let answer = addresses(&resolver, &absolute).await;
            (srv, host, backup, answer)
        });
    }
    let mut found = Vec::new();
    let mut failures = Vec::new();
    while let Some(done) = targets.join_next().await {
        let Ok((srv, host, backup, answer)) = done else {
            continue;
        };
        match answer {
            Ok((addrs, until)) => {
                valid_until = valid_until.min(until);
                found.extend(addrs.into_iter().map(|a| Found {
                    port: Some(srv.port),
                    host: Some(host.clone()),
                    weight: Some(u32::from(srv.weight)),
                    backup,
                    ..a
                }));
            }
            Err(e) => failures.push(format!("{host}: {e}")),
        }
    }
    if found.is_empty() {
        return Err(format!("no SRV target resolves ({})", failures.join("; ")));
    }
    if !failures.is_empty() {
        tracing::warn!(name, "SRV targets left out: {}", failures.join("; "));
    }
    // Primaries before backups, so that the bound of backends per name keeps the primaries
    // (and an address that is both stays a primary).
    found.sort_by_key(|f| (f.backup, f.ip, f.port));
    let mut seen = std::collections::HashSet::new();
    found.retain(|f| seen.insert((f.ip, f.port)));
    Ok((capped(name, found), valid_until))
}

fn capped(name: &str, mut found: Vec<Found>) -> Vec<Found> {
    if found.len() > MAX_ADDRESSES_PER_NAME {
        tracing::warn!(
            name,
            "{name} brings {} backends; only the first {MAX_ADDRESSES_PER_NAME} (backups last, each in address order) are used",
            found.len()
        );
        found.truncate(MAX_ADDRESSES_PER_NAME);
    }
    found
}

/// The system's resolver (`/etc/resolv.conf`, `/etc/hosts`), or one asking the configured
/// name servers.
pub(super) fn resolver(
    config: &DiscoveryConfig,
) -> Result<TokioResolver, hickory_resolver::net::NetError> {
    let mut builder = if config.nameservers.is_empty() {
        TokioResolver::builder_tokio()?
    } else {
        let servers = config
            .nameservers
            .iter()
            .map(|addr| {
                let connections = [ConnectionConfig::udp(), ConnectionConfig::tcp()]
                    .into_iter()
                    .map(|mut c| {
                        c.port = addr.port();
                        c
                    })
                    .collect();
                NameServerConfig::new(addr.ip(), true, connections)
            })
            .collect();
        TokioResolver::builder_with_config(
            ResolverConfig::from_parts(None, Vec::new(), servers),
            TokioRuntimeProvider::default(),
        )
    };
    let options = builder.options_mut();
    options.timeout = LOOKUP_TIMEOUT;
    options.attempts = 2;
    builder.build()
}
