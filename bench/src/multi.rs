//! `--processes K`: run K children of this executable (`--shard i/K`), each with its share of
//! the connections and the rate, sample the servers meanwhile, and merge the children's JSON
//! results into one (counters summed, percentiles from the merged histograms).

use std::process::Stdio;
use std::time::Instant;

use serde_json::{Map, Value, json};
use tokio::sync::watch;

use crate::stats::{Histogram, Percentiles, ServerUsage, round2};
use crate::{
    Args, Scenario, is_clean, raise_nofile, random_tag, server_usage, servers_text, spawn_samplers,
    write_result,
};

/// Share `i` of `total` split over `k` (the first `total % k` shares get one more).
fn share(total: u64, i: u32, k: u32) -> u64 {
    total / u64::from(k) + u64::from(u64::from(i) < total % u64::from(k))
}

/// The command line of child `i` of `k`: the parent's flags with shares of the counts and
/// rates; no `--server-pid` (the parent samples), no `--check` and no `--out` (stdout is
/// read by the parent). The secret goes through the environment, not the command line.
fn child_args(args: &Args, tag: &str, i: u32, k: u32) -> Vec<String> {
    let kf = f64::from(k);
    let mut out = vec![
        format!("--scenario={}", args.scenario.name()),
        format!("--server={}", servers_text(&args.server)),
        format!(
            "--source-addrs={}",
            args.source_addrs
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(",")
        ),
        format!("--connections={}", share(args.connections, i, k)),
        format!("--duration={}", args.duration),
        format!("--rate={}", args.rate / kf),
        // hold: every client expects every broadcast, however the clients are split.
        format!(
            "--messages={}",
            if args.scenario == Scenario::Hold {
                args.messages
            } else {
                share(args.messages, i, k)
            }
        ),
        format!("--connect-concurrency={}", args.connect_concurrency),
        format!("--connect-timeout={}", args.connect_timeout),
        format!("--drain={}", args.drain),
        format!("--progress={}", args.progress),
        format!("--churn-rate={}", args.churn_rate / kf),
        format!("--run-tag={tag}"),
        format!("--shard={i}/{k}"),
    ];
    if let Some(threads) = args.threads {
        out.push(format!("--threads={threads}"));
    }
    if let Some(stop) = &args.stop_file {
        out.push(format!("--stop-file={}", stop.display()));
    }
    if !args.reconnect_to.is_empty() {
        out.push(format!(
            "--reconnect-to={}",
            servers_text(&args.reconnect_to)
        ));
    }
    out
}

/// Run the children, merge their results, write the merged result; like `crate::run`.
pub async fn run(args: Args) -> Result<bool, String> {
    if args.jwt_secret.is_empty() {
        return Err("--jwt-secret is empty".to_owned());
    }
    raise_nofile();
    let k = args.processes;
    let tag = args.run_tag.clone().unwrap_or_else(random_tag);
    let exe = std::env::current_exe().map_err(|e| format!("own executable: {e}"))?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let samplers = spawn_samplers(&args.server_pid, &stop_rx);
    say!(
        "{} against {} with {k} processes (run tag {tag})",
        args.scenario.name(),
        servers_text(&args.server)
    );
    let started = Instant::now();
    let mut children = Vec::new();
    for i in 0..k {
        let child = tokio::process::Command::new(&exe)
            .args(child_args(&args, &tag, i, k))
            .env("SWITCHBOARD_JWT_SECRET", &args.jwt_secret)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("spawn shard {i}/{k}: {e}"))?;
        children.push(child);
    }
    let mut results = Vec::new();
    let mut failures = Vec::new();
    for (i, child) in children.into_iter().enumerate() {
        match child.wait_with_output().await {
            Ok(output) => {
                // 0 = clean, 3 = ran but not clean: both wrote a result.
                let code = output.status.code();
                match serde_json::from_slice::<Value>(&output.stdout) {
                    Ok(result) if matches!(code, Some(0 | 3)) => results.push(result),
                    _ => failures.push(format!(
                        "shard {i}/{k} exited with {} and no result",
                        output.status
                    )),
                }
            }
            Err(e) => failures.push(format!("shard {i}/{k}: {e}")),
        }
    }
    let wall = started.elapsed().as_secs_f64();
    let _ = stop_tx.send(true);
    let (server, servers) = server_usage(samplers).await;

    let mut merged = merge(&results, &failures);
    merged["parameters"] = parameters(&args, &tag);
    merged["wall_s"] = json!(round2(wall));
    merged["server"] = server;
    merged["servers"] = servers;
    // The same key order as a single-process result.
    let mut result = Map::new();
    for key in [
        "scenario",
        "parameters",
        "wall_s",
        "connections",
        "messages",
        "latency_ms",
        "server",
        "servers",
        "loadgen",
        "loadgen_processes",
        "errors",
        "scenario_details",
    ] {
        result.insert(key.to_owned(), merged[key].take());
    }
    let result = Value::Object(result);
    write_result(&args, &result)?;
    Ok(!args.check || is_clean(&result))
}

/// The parameters of the whole run.
fn parameters(a: &Args, tag: &str) -> Value {
    json!({
        "server": servers_text(&a.server),
        "servers": a.server.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "processes": a.processes,
        "shard": Value::Null,
        "churn_rate": a.churn_rate,
        "connections": a.connections,
        "duration_s": a.duration,
        "rate": a.rate,
        "messages": a.messages,
        "source_addrs": a.source_addrs.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "connect_concurrency": a.connect_concurrency,
        "threads": a.threads,
        "drain_s": a.drain,
        "run_tag": tag,
    })
}

/// Merge shard results: counters add up, durations (`*_s`) take the longest shard, rates
/// are recomputed, percentiles come from the merged histograms, errors are concatenated.
/// `failures` (shards without a result) count as errors.
pub fn merge(results: &[Value], failures: &[String]) -> Value {
    let u = |v: &Value| v.as_u64().unwrap_or(0);
    let f = |v: &Value| v.as_f64().unwrap_or(0.0);
    let sum =
        |section: &str, key: &str| -> u64 { results.iter().map(|r| u(&r[section][key])).sum() };
    let max = |section: &str, key: &str| -> f64 {
        results
            .iter()
            .map(|r| f(&r[section][key]))
            .fold(0.0, f64::max)
    };

    let mut histograms: Map<String, Value> = Map::new();
    for r in results {
        for (key, h) in r["histograms"].as_object().into_iter().flatten() {
            let Ok(h) = serde_json::from_value::<Histogram>(h.clone()) else {
                continue;
            };
            let mut merged = histograms
                .get(key)
                .and_then(|m| serde_json::from_value::<Histogram>(m.clone()).ok())
                .unwrap_or_default();
            merged.merge(&h);
            histograms.insert(key.clone(), json!(merged));
        }
    }
    let percentiles = |key: &str| -> Value {
        let h = histograms
            .get(key)
            .and_then(|h| serde_json::from_value::<Histogram>(h.clone()).ok())
            .unwrap_or_default();
        json!(Percentiles::from_histogram(&h))
    };

    let connect_s = max("connections", "connect_s");
    let established = sum("connections", "established");
    let load_s = max("messages", "load_s");
    let sent = sum("messages", "sent");
    let mut samples: Vec<String> = failures.to_vec();
    for r in results {
        let shard = r["parameters"]["shard"].as_str().unwrap_or("?");
        for s in r["errors"]["samples"].as_array().into_iter().flatten() {
            samples.push(format!(
                "[shard {shard}] {}",
                s.as_str().unwrap_or_default()
            ));
        }
    }
    samples.truncate(20);
    let loadgens: Vec<ServerUsage> = results
        .iter()
        .filter_map(|r| serde_json::from_value(r["loadgen"].clone()).ok())
        .collect();

    let mut details = Map::new();
    for r in results {
        for (key, value) in r["scenario_details"].as_object().into_iter().flatten() {
            let merged = if histograms.contains_key(key) {
                percentiles(key)
            } else {
                merge_value(details.get(key), key, value)
            };
            details.insert(key.clone(), merged);
        }
    }

    json!({
        "scenario": results.first().map_or(Value::Null, |r| r["scenario"].clone()),
        "connections": {
            "attempted": sum("connections", "attempted"),
            "established": established,
            "held": sum("connections", "held"),
            // Sum of each shard's peak: the shards hold their connections at the same time.
            "peak": sum("connections", "peak"),
            "connect_s": round2(connect_s),
            "connect_rate_per_s": round2(established as f64 / connect_s.max(1e-3)),
        },
        "messages": {
            "sent": sent,
            "expected_deliveries": sum("messages", "expected_deliveries"),
            "delivered": sum("messages", "delivered"),
            "lost": sum("messages", "lost"),
            "duplicated": sum("messages", "duplicated"),
            "unexpected": sum("messages", "unexpected"),
            "load_s": round2(load_s),
            "send_rate_per_s": round2(sent as f64 / load_s.max(1e-3)),
        },
        "latency_ms": percentiles("latency_ms"),
        "loadgen": if loadgens.is_empty() { Value::Null } else { json!(ServerUsage::total(&loadgens)) },
        "loadgen_processes": loadgens,
        "errors": {
            "count": sum("errors", "count") + failures.len() as u64,
            "samples": samples,
        },
        "scenario_details": details,
    })
}

/// Merge one detail value into what the earlier shards gave: numbers add up (seconds, keys
/// ending in `_s`, take the maximum), objects merge by key, anything else keeps the first.
fn merge_value(so_far: Option<&Value>, key: &str, value: &Value) -> Value {
    let Some(so_far) = so_far else {
        return value.clone();
    };
    match (so_far, value) {
        (Value::Number(a), Value::Number(b)) => match (a.as_u64(), b.as_u64()) {
            (Some(a), Some(b)) if !key.ends_with("_s") => json!(a + b),
            (Some(a), Some(b)) => json!(a.max(b)),
            _ => {
                let (a, b) = (a.as_f64().unwrap_or(0.0), b.as_f64().unwrap_or(0.0));
                json!(round2(if key.ends_with("_s") { a.max(b) } else { a + b }))
            }
        },
        (Value::Object(a), Value::Object(b)) => {
            let mut out = a.clone();
            for (k, v) in b {
                out.insert(k.clone(), merge_value(a.get(k), k, v));
            }
            Value::Object(out)
        }
        _ => so_far.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_add_up() {
        for total in [0u64, 1, 7, 19_000] {
            for k in 1..5 {
                assert_eq!((0..k).map(|i| share(total, i, k)).sum::<u64>(), total);
            }
        }
    }

    #[test]
    fn merge_sums_counters_and_merges_histograms() {
        let shard = |i: u64, samples: &[u64]| {
            json!({
                "scenario": "relay",
                "parameters": { "shard": format!("{i}/2") },
                "connections": { "attempted": 10, "established": 10, "held": 10, "peak": 10, "connect_s": 1.0 + i as f64 },
                "messages": { "sent": 100, "expected_deliveries": 100, "delivered": 99 + i, "lost": 1 - i, "duplicated": 0, "unexpected": 0, "load_s": 5.0 },
                "errors": { "count": i, "samples": ["boom"] },
                "histograms": { "latency_ms": Histogram::from_sorted(samples) },
                "scenario_details": { "cross_node_sent": 40, "sync": { "verify_s": 2.5 }, "latency_is": "x" },
            })
        };
        let m = merge(&[shard(0, &[1000, 3000]), shard(1, &[2000])], &[]);
        assert_eq!(m["connections"]["attempted"], 20);
        assert_eq!(m["connections"]["connect_s"], 2.0);
        assert_eq!(m["messages"]["lost"], 1);
        assert_eq!(m["messages"]["delivered"], 199);
        assert_eq!(m["errors"]["count"], 1);
        assert_eq!(m["errors"]["samples"][1], "[shard 1/2] boom");
        assert_eq!(m["latency_ms"]["count"], 3);
        assert!((m["latency_ms"]["p50"].as_f64().unwrap_or(0.0) - 2.0).abs() < 0.01);
        assert_eq!(m["latency_ms"]["max"], 3.0);
        assert_eq!(m["scenario_details"]["cross_node_sent"], 80);
        assert_eq!(m["scenario_details"]["sync"]["verify_s"], 2.5);
        assert_eq!(m["scenario_details"]["latency_is"], "x");
        let failed = merge(&[shard(0, &[1])], &["shard 1/2 died".to_owned()]);
        assert_eq!(failed["errors"]["count"], 1);
    }
}
