//! What drawing a key rank costs, per popularity law, next to a uniform draw measured in the
//! same run (the baseline: compare ratios, not nanoseconds, on a shared machine). The load
//! generator draws one rank per request, so this bounds its request rate from the key choice
//! alone.
//!
//! `cargo bench -p pegasus-client --bench key_sampler`

use criterion::{Criterion, black_box, criterion_group, criterion_main};
use pegasus_client::workload::{KeyChooser, Popularity};
use rand::{SeedableRng, rngs::StdRng};

fn key_sampler(c: &mut Criterion) {
    let keys = 1_000_000;
    let laws = [
        ("uniform", Popularity::Uniform),
        ("zipf-0.99", Popularity::Zipf(0.99)),
        ("zipf-1.2", Popularity::Zipf(1.2)),
        ("zipf-2.0", Popularity::Zipf(2.0)),
        (
            "hotspot-0.2-0.8",
            Popularity::Hotspot {
                hot_fraction: 0.2,
                hot_share: 0.8,
            },
        ),
    ];
    let mut group = c.benchmark_group("key_sampler");
    for (name, law) in laws {
        let chooser = KeyChooser::new(keys, law).expect("valid parameters");
        let mut rng = StdRng::seed_from_u64(7);
        group.bench_function(name, |b| b.iter(|| black_box(chooser.sample(&mut rng))));
    }
    group.finish();
}

criterion_group!(benches, key_sampler);
criterion_main!(benches);
