//! The balancers: weights, exclusions and in-flight counts.

use super::*;

// ---------------------------------------------------------------------------------------------
// 3. Balancers
// ---------------------------------------------------------------------------------------------

const ALGORITHMS: [Algorithm; 5] = [
    Algorithm::LeastConn,
    Algorithm::RoundRobin,
    Algorithm::Random,
    Algorithm::P2c,
    Algorithm::LeastTime,
];

/// Pools up to this size are scanned exactly by least_conn.
const LEAST_CONN_EXACT: usize = 64;

/// Backends with the given weights. The specs come from the config loader's own defaults (then get
/// their weight), so that fields added to `BackendSpec` later keep their default values here.
fn pool(weights: &[u32]) -> Vec<Arc<Backend>> {
    let urls: Vec<String> = (0..weights.len())
        .map(|i| format!("http://127.0.0.1:{}", 10_000 + i))
        .collect();
    let specs: Vec<BackendSpec> = if urls.is_empty() {
        Vec::new()
    } else {
        Config::with_backends(SocketAddr::from(([127, 0, 0, 1], 0)), &urls)
            .expect("a valid pool")
            .backends
    };
    specs
        .into_iter()
        .zip(weights)
        .map(|(spec, &weight)| {
            assert!(matches!(spec.addr, BackendAddr::Ip(_)));
            Arc::new(Backend::new(&BackendSpec { weight, ..spec }))
        })
        .collect()
}

/// Whether a backend may take a request: the balancers' own definition (healthy by the active
/// checks and not ejected by passive health; nothing here ejects, so this is the health flag).
fn eligible(backend: &Backend, index: usize, exclude: &Exclude) -> bool {
    backend.is_available() && !exclude.contains(index)
}

#[derive(Debug, Clone)]
struct PoolCase {
    weights: Vec<u32>,
    healthy: Vec<bool>,
    in_flight: Vec<u8>,
    /// Indices a request already tried; may name indices past the end of the pool.
    exclude: Vec<usize>,
}

fn pool_case() -> impl Strategy<Value = PoolCase> {
    (
        prop_oneof![4 => 0usize..=8, 3 => 9usize..=LEAST_CONN_EXACT, 1 => 65usize..=100],
        select(&[0.0, 0.1, 0.5, 0.9, 1.0][..]),
    )
        .prop_flat_map(|(n, p_healthy)| {
            (
                proptest::collection::vec(1u32..=100, n),
                proptest::collection::vec(proptest::bool::weighted(p_healthy), n),
                proptest::collection::vec(0u8..=6, n),
                proptest::collection::vec(0..n + 2, 0..=n + 1),
            )
        })
        .prop_map(|(weights, healthy, in_flight, exclude)| PoolCase {
            weights,
            healthy,
            in_flight,
            exclude,
        })
}

/// `a` carries no more load per unit of weight than `b`.
fn not_more_loaded(a: &Backend, b: &Backend) -> bool {
    u128::from(a.in_flight()) * u128::from(b.weight())
        <= u128::from(b.in_flight()) * u128::from(a.weight())
}

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn every_algorithm_picks_an_eligible_backend(case in pool_case()) {
        let backends = pool(&case.weights);
        for (b, &healthy) in backends.iter().zip(&case.healthy) {
            b.set_healthy(healthy);
        }
        let _guards: Vec<InFlightGuard> = backends
            .iter()
            .zip(&case.in_flight)
            .flat_map(|(b, &n)| (0..n).map(|_| InFlightGuard::new(b.clone())))
            .collect();
        let mut exclude = Exclude::default();
        for &i in &case.exclude {
            exclude.add(i);
        }
        let eligible_set: Vec<usize> = (0..backends.len())
            .filter(|&i| eligible(&backends[i], i, &exclude))
            .collect();

        for algorithm in ALGORITHMS {
            let selector = selector_for(algorithm, &backends);
            for _ in 0..16 {
                let pick = selector.select(&backends, &exclude);
                match pick {
                    None => prop_assert!(
                        eligible_set.is_empty(),
                        "{algorithm:?} found nothing among eligible {eligible_set:?}"
                    ),
                    Some(i) => {
                        prop_assert!(
                            eligible_set.contains(&i),
                            "{algorithm:?} picked {i}, eligible {eligible_set:?}"
                        );
                        if algorithm == Algorithm::LeastConn && backends.len() <= LEAST_CONN_EXACT {
                            for &j in &eligible_set {
                                prop_assert!(
                                    not_more_loaded(&backends[i], &backends[j]),
                                    "least_conn picked {i} ({}/{}) over {j} ({}/{})",
                                    backends[i].in_flight(), backends[i].weight(),
                                    backends[j].in_flight(), backends[j].weight(),
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}

proptest! {
    // 4 algorithms x 4,000 picks per case: fewer cases keep this under a second.
    #![proptest_config(cases(64))]

    /// With every backend healthy and idle, the share of picks follows the weights: exactly for
    /// the deterministic algorithms, statistically for the random ones.
    #[test]
    fn idle_traffic_follows_weights(weights in proptest::collection::vec(1u32..=100, 1..=16)) {
        const PICKS: usize = 4_000;
        let total: u32 = weights.iter().sum();
        for algorithm in ALGORITHMS {
            let backends = pool(&weights);
            let selector = selector_for(algorithm, &backends);
            let mut counts: HashMap<usize, usize> = HashMap::new();
            for _ in 0..PICKS {
                let i = selector.select(&backends, &Exclude::default());
                prop_assert!(i.is_some(), "{algorithm:?} found nothing in a healthy pool");
                *counts.entry(i.unwrap()).or_default() += 1;
            }
            let tolerance = match algorithm {
                // Without latency samples least_time ties everywhere and rotates by weight; hash
                // without a request key balances as least_conn does.
                Algorithm::RoundRobin
                | Algorithm::LeastConn
                | Algorithm::LeastTime
                | Algorithm::Hash => 0.01,
                Algorithm::Random | Algorithm::P2c => 0.05,
            };
            for (i, &w) in weights.iter().enumerate() {
                let got = counts.get(&i).copied().unwrap_or(0) as f64 / PICKS as f64;
                let expected = f64::from(w) / f64::from(total);
                prop_assert!(
                    (got - expected).abs() < tolerance,
                    "{algorithm:?}: backend {i} (weight {w} of {total}) got {got:.4}, expected {expected:.4}"
                );
            }
        }
    }
}
