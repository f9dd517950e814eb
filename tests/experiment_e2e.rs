//! End to end: `pegasus experiment skew --quick` on a tiny sweep (three systems, two
//! popularities, two write ratios, two trials of one rate each): every trial of every point
//! has its CSV row, the summary has its table of medians, the plots are PNG files of the size
//! drawn, and no lab is left behind.
//! Needs root, as CI runs.

mod support;

use support::run_ok;

const SYSTEMS: [&str; 3] = ["xdp", "pegasus", "cache"];

#[test]
fn the_quick_skew_experiment_writes_every_row_and_its_plots() {
    let out = std::env::temp_dir().join(format!("pegasus-skew-{}", std::process::id()));
    let printed = run_ok(&[
        "experiment",
        "skew",
        "--quick",
        "--out",
        &out.display().to_string(),
        "--systems",
        &SYSTEMS.join(","),
        "--skews",
        "uniform,1.2",
        "--write-ratios",
        "0,0.5",
        "--servers",
        "2",
        "--keys",
        "2000",
        "--steps",
        "1",
        "--trials",
        "2",
        "--seconds",
        "0.3",
        "--warmup",
        "0.3",
    ]);
    assert!(printed.contains("| popularity | writes |"), "{printed}");

    let csv = std::fs::read_to_string(out.join("results.csv")).unwrap();
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    assert_eq!(
        header,
        [
            "system",
            "distribution",
            "theta",
            "write_ratio",
            "trial",
            "throughput_ops",
            "offered_ops",
            "p99_us",
            "max_over_mean",
            "errors",
            "server_shares",
            "switch_share",
            "probes"
        ]
    );
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    let mut points = Vec::new();
    for system in SYSTEMS {
        for (distribution, theta) in [("uniform", ""), ("zipf", "1.2")] {
            for write_ratio in ["0", "0.5"] {
                for trial in ["0", "1"] {
                    points.push([system, distribution, theta, write_ratio, trial]);
                }
            }
        }
    }
    assert_eq!(rows.len(), points.len(), "{csv}");
    for (row, point) in rows.iter().zip(&points) {
        assert_eq!(row.len(), header.len(), "{row:?}");
        assert_eq!(&row[..5], point, "{csv}");
        for number in [5, 6, 7, 8, 9, 11, 12] {
            row[number]
                .parse::<f64>()
                .unwrap_or_else(|_| panic!("column {} is not a number: {row:?}", header[number]));
        }
        let shares: Vec<f64> = row[10].split(';').map(|s| s.parse().unwrap()).collect();
        assert_eq!(shares.len(), 2, "{row:?}");
        let switch_share: f64 = row[11].parse().unwrap();
        assert!(
            row[0] == "cache" || switch_share == 0.0,
            "only the cache answers from the switch: {row:?}"
        );
        assert_eq!(row[12], "1", "one rate per trial: {row:?}");
    }

    let summary = std::fs::read_to_string(out.join("summary.md")).unwrap();
    assert!(summary.contains("| zipf-1.2 | 50% |"), "{summary}");
    assert!(summary.contains("the median of 2 trials"), "{summary}");
    assert!(
        summary.contains("- Pegasus, Zipf 1.2, 50% writes: "),
        "the targets are checked: {summary}"
    );
    for plot in [
        "throughput_vs_skew.png",
        "throughput_vs_write_ratio.png",
        "server_load.png",
    ] {
        let bytes = std::fs::read(out.join(plot)).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{plot} is not a PNG");
        let width = u32::from_be_bytes(bytes[16..20].try_into().unwrap());
        assert_eq!(width, 960, "{plot}");
    }
    let left: Vec<String> = pegasus_control::lab::netns::list()
        .unwrap()
        .into_iter()
        .filter(|ns| ns.starts_with("pg-skew-"))
        .collect();
    assert!(left.is_empty(), "labs left behind: {left:?}");
    let _ = std::fs::remove_dir_all(&out);
}
