//! The switch's metrics in the Prometheus text format (version 0.0.4), served over HTTP at
//! `GET /metrics` (`pegasus switch --metrics ADDR`): the XDP program's counters, the servers'
//! reported loads, the directory, and what hot-key detection has done.

use super::admin::Status;
use anyhow::{Context, Result};
use pegasus_common::switch::Counter;
use std::{fmt::Write as _, net::SocketAddr, time::Duration};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

/// Longest request head read, in bytes.
const REQUEST_HEAD_MAX: usize = 8 * 1024;
/// How long a scraper may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a whole exchange may take.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);
/// Scrapers served at once.
pub const CONNECTIONS_MAX: usize = 16;

/// The metrics of `status`, in the Prometheus text format.
pub fn render(status: &Status) -> String {
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, samples: &[(String, u64)]| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(out, "{name}{labels} {value}");
        }
    };
    for &counter in Counter::ALL {
        metric(
            &format!("pegasus_switch_{}_total", counter.name()),
            "counter",
            &format!("{} (XDP program, summed over CPUs)", counter.help().trim()),
            &[(String::new(), status.counters.get(counter))],
        );
    }
    let loads: Vec<(String, u64)> = status
        .server_loads
        .iter()
        .map(|&(id, load)| (format!("{{server=\"{id}\"}}"), load as u64))
        .collect();
    metric(
        "pegasus_server_load",
        "gauge",
        "Load (queued requests) each server last reported in a reply.",
        &loads,
    );
    metric(
        "pegasus_directory_keys",
        "gauge",
        "Keys in the switch's directory.",
        &[(String::new(), status.hot_keys as u64)],
    );
    metric(
        "pegasus_switch_epoch",
        "gauge",
        "The epoch stamped into versions.",
        &[(String::new(), status.epoch as u64)],
    );
    metric(
        "pegasus_switch_version_counter",
        "gauge",
        "The counter part of the last stamped version.",
        &[(String::new(), status.version_counter)],
    );
    let d = &status.detection;
    for (name, help, value) in [
        (
            "samples",
            "Sampled requests read by hot-key detection.",
            d.samples,
        ),
        ("epochs", "Statistics epochs completed.", d.epochs),
        ("adds", "Keys made hot by detection.", d.adds),
        ("evicts", "Keys made cold by detection.", d.evicts),
        (
            "failures",
            "Adds and evictions that failed (retried later).",
            d.failures,
        ),
        (
            "restored",
            "Copies made of read-mostly hot keys whose replica set had shrunk.",
            d.restored,
        ),
        (
            "resized",
            "Changes of hot keys' replica targets (sized by their share of the load).",
            d.resized,
        ),
        (
            "samples_discarded",
            "Samples whose key does not hash to their key hash (forged or broken).",
            d.samples_discarded,
        ),
    ] {
        metric(
            &format!("pegasus_controller_{name}_total"),
            "counter",
            help,
            &[(String::new(), value)],
        );
    }
    metric(
        "pegasus_controller_sample_period",
        "gauge",
        "The switch samples one GET or PUT in this many (adapted to the rack's rate).",
        &[(String::new(), d.sample_period)],
    );
    let per_key = |f: fn(&crate::controller::HotKey) -> u64| -> Vec<(String, u64)> {
        status
            .hot
            .iter()
            .map(|k| (format!("{{key=\"{}\"}}", key_label(k)), f(k)))
            .collect()
    };
    metric(
        "pegasus_hot_key_reads_total",
        "counter",
        "Reads the directory routed, per hot key.",
        &per_key(|k| k.reads),
    );
    metric(
        "pegasus_hot_key_writes_total",
        "counter",
        "Writes the directory routed, per hot key.",
        &per_key(|k| k.writes),
    );
    metric(
        "pegasus_hot_key_replica_target",
        "gauge",
        "Servers each hot key's writes go to, sized by its share of the load.",
        &per_key(|k| k.replica_target as u64),
    );
    metric(
        "pegasus_hot_key_replicas",
        "gauge",
        "Servers holding the newest version, per hot key.",
        &per_key(|k| k.replicas.len() as u64),
    );
    out
}

/// A hot key as a label value: its name (escaped as the format wants) or its hash.
fn key_label(k: &crate::controller::HotKey) -> String {
    match &k.key {
        Some(name) => name
            .replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n"),
        None => format!("{:#018x}", k.keyhash),
    }
}

/// Serves `GET /metrics` on `listener` until the task is dropped; `scrape` gives the body.
/// Connections are served concurrently, at most [`CONNECTIONS_MAX`] at once (the others wait
/// to be accepted), each within [`CONNECTION_TIMEOUT`]: a slow or silent scraper holds up no
/// one.
pub async fn serve(
    listener: TcpListener,
    scrape: impl Fn() -> Result<String> + Send + Sync + 'static,
) -> Result<()> {
    let scrape = std::sync::Arc::new(scrape);
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(CONNECTIONS_MAX));
    loop {
        let slot = slots.clone().acquire_owned().await?;
        let (stream, peer) = listener.accept().await?;
        let scrape = scrape.clone();
        tokio::spawn(async move {
            let answered = tokio::time::timeout(CONNECTION_TIMEOUT, answer(stream, &*scrape)).await;
            match answered {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::debug!(%peer, "metrics request: {e:#}"),
                Err(_) => tracing::debug!(%peer, "metrics request timed out"),
            }
            drop(slot);
        });
    }
}

/// Binds the metrics address.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot serve metrics on {addr}"))
}

async fn answer(mut stream: TcpStream, scrape: &impl Fn() -> Result<String>) -> Result<()> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    tokio::time::timeout(REQUEST_TIMEOUT, async {
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < REQUEST_HEAD_MAX {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        Ok::<_, std::io::Error>(())
    })
    .await
    .context("the request took too long")??;
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let mut parts = line.split(|&b| b == b' ');
    let (method, path) = (parts.next(), parts.next());
    let (status, body) = match (method, path) {
        (Some(b"GET"), Some(b"/metrics")) => match scrape() {
            Ok(body) => ("200 OK", body),
            Err(e) => ("500 Internal Server Error", format!("{e:#}\n")),
        },
        (Some(b"GET"), Some(_)) => ("404 Not Found", "try /metrics\n".to_owned()),
        _ => ("405 Method Not Allowed", "GET /metrics only\n".to_owned()),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        controller::{DetectionSnapshot, HotKey},
        switch::Counters,
    };

    fn status() -> Status {
        Status {
            ports: vec!["sv0".into()],
            store_port: 7400,
            epoch: 3,
            version_counter: 42,
            counters: Counters(
                [("packets".to_owned(), 10), ("hot_reads".to_owned(), 4)]
                    .into_iter()
                    .collect(),
            ),
            server_loads: vec![(0, 5), (1, 0)],
            hot_keys: 1,
            detection: DetectionSnapshot {
                samples: 7,
                epochs: 2,
                adds: 1,
                evicts: 0,
                failures: 0,
                restored: 0,
                samples_discarded: 0,
                resized: 0,
                sample_period: 8,
            },
            hot: vec![HotKey {
                key: Some("us\"er0".into()),
                keyhash: 1,
                home: 0,
                replicas: vec![0, 1],
                ver_completed: 9,
                reads: 4,
                writes: 0,
                evicting: false,
                installing: false,
                cached: None,
                cache_hits: None,
                replica_target: 2,
            }],
        }
    }

    /// Every sample line is `name{labels} value` under a TYPE line of its name.
    #[test]
    fn the_text_format_is_well_formed() {
        let text = render(&status());
        let mut typed = std::collections::HashSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                assert!(kind == "counter" || kind == "gauge", "{line}");
                typed.insert(name.to_owned());
            } else if !line.starts_with("# HELP ") {
                let name_end = line.find(['{', ' ']).unwrap();
                assert!(typed.contains(&line[..name_end]), "untyped: {line}");
                let value = line.rsplit(' ').next().unwrap();
                value.parse::<u64>().unwrap_or_else(|_| panic!("{line}"));
            }
        }
        assert!(text.contains("pegasus_switch_hot_reads_total 4\n"));
        assert!(text.contains("pegasus_server_load{server=\"0\"} 5\n"));
        assert!(text.contains("pegasus_controller_samples_total 7\n"));
        assert!(text.contains("pegasus_hot_key_replicas{key=\"us\\\"er0\"} 2\n"));
    }

    #[tokio::test]
    async fn metrics_are_served_over_http() {
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(serve(listener, || Ok(render(&status()))));
        let get = |path: &'static str| async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
                .await
                .unwrap();
            let mut response = String::new();
            s.read_to_string(&mut response).await.unwrap();
            response
        };
        let ok = get("/metrics").await;
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.contains("pegasus_directory_keys 1\n"), "{ok}");
        assert!(get("/other").await.starts_with("HTTP/1.1 404"));
        server.abort();
    }

    /// Scrapers that connect and say nothing (as many as may be served at once, less one)
    /// do not hold up a scraper that asks.
    #[tokio::test]
    async fn a_silent_scraper_holds_up_no_one() {
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(serve(listener, || Ok(render(&status()))));
        let mut silent = Vec::new();
        for _ in 0..CONNECTIONS_MAX - 1 {
            silent.push(TcpStream::connect(addr).await.unwrap());
        }
        let asked = async {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").await.unwrap();
            let mut response = String::new();
            s.read_to_string(&mut response).await.unwrap();
            response
        };
        let response = tokio::time::timeout(Duration::from_secs(2), asked)
            .await
            .expect("answered while the others stay silent");
        assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
        drop(silent);
        server.abort();
    }
}
