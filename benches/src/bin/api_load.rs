//! A load generator for the freezer-api benchmark (`benches/api.py`): N concurrent clients send
//! one request shape for a fixed time; prints one JSON line with the rate, latency percentiles
//! and the status codes seen. Written in Rust so the client is never the bottleneck it would be
//! in Python; it shares the 2 cores with the server measured, for ours and upstream's alike.
//!
//! ```text
//! api_load --url URL [--method GET|POST] [--header 'K: V']... [--body JSON]
//!          [--concurrency 50] [--seconds 10] [--warmup 1]
//! ```

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Args {
    url: String,
    method: reqwest::Method,
    headers: reqwest::header::HeaderMap,
    body: Option<String>,
    concurrency: usize,
    seconds: f64,
    warmup: f64,
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        url: String::new(),
        method: reqwest::Method::GET,
        headers: reqwest::header::HeaderMap::new(),
        body: None,
        concurrency: 50,
        seconds: 10.0,
        warmup: 1.0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--url" => a.url = value()?,
            "--method" => a.method = value()?.parse().map_err(|e| format!("--method: {e}"))?,
            "--header" => {
                let h = value()?;
                let (k, v) = h
                    .split_once(':')
                    .ok_or_else(|| format!("--header {h:?}: expected 'Name: value'"))?;
                let name = reqwest::header::HeaderName::from_bytes(k.trim().as_bytes())
                    .map_err(|e| format!("--header {k:?}: {e}"))?;
                let value = reqwest::header::HeaderValue::from_str(v.trim())
                    .map_err(|e| format!("--header {k:?}: {e}"))?;
                a.headers.append(name, value);
            }
            "--body" => a.body = Some(value()?),
            "--concurrency" => {
                a.concurrency = value()?
                    .parse()
                    .map_err(|e| format!("--concurrency: {e}"))?
            }
            "--seconds" => a.seconds = value()?.parse().map_err(|e| format!("--seconds: {e}"))?,
            "--warmup" => a.warmup = value()?.parse().map_err(|e| format!("--warmup: {e}"))?,
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if a.url.is_empty() {
        return Err("--url is required".into());
    }
    if a.concurrency == 0 {
        return Err("--concurrency must be at least 1".into());
    }
    Ok(a)
}

/// What one client saw: latencies in microseconds and status counts (0 = no response).
#[derive(Default)]
struct Seen {
    micros: Vec<u32>,
    statuses: BTreeMap<u16, u64>,
}

async fn client(http: reqwest::Client, args: Arc<Args>, start: Instant, end: Instant) -> Seen {
    let mut seen = Seen::default();
    while Instant::now() < end {
        let mut req = http
            .request(args.method.clone(), &args.url)
            .headers(args.headers.clone());
        if let Some(b) = &args.body {
            req = req.body(b.clone());
        }
        let t = Instant::now();
        let status = match req.send().await {
            Ok(r) => {
                let s = r.status().as_u16();
                // Read the whole body: a response is served when it has arrived.
                match r.bytes().await {
                    Ok(_) => s,
                    Err(_) => 0,
                }
            }
            Err(_) => 0,
        };
        if t >= start {
            seen.micros
                .push(u32::try_from(t.elapsed().as_micros()).unwrap_or(u32::MAX));
            *seen.statuses.entry(status).or_default() += 1;
        }
    }
    seen
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    f64::from(sorted[i]) / 1000.0
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let args = match parse() {
        Ok(a) => Arc::new(a),
        Err(e) => {
            eprintln!("api_load: {e}");
            return ExitCode::from(2);
        }
    };
    let http = match reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency)
        .timeout(Duration::from_secs(30))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("api_load: {e}");
            return ExitCode::from(2);
        }
    };
    let start = Instant::now() + Duration::from_secs_f64(args.warmup);
    let end = start + Duration::from_secs_f64(args.seconds);
    let tasks: Vec<_> = (0..args.concurrency)
        .map(|_| tokio::spawn(client(http.clone(), args.clone(), start, end)))
        .collect();
    let mut all = Seen::default();
    for t in tasks {
        match t.await {
            Ok(s) => {
                all.micros.extend(s.micros);
                for (k, v) in s.statuses {
                    *all.statuses.entry(k).or_default() += v;
                }
            }
            Err(e) => {
                eprintln!("api_load: a client failed: {e}");
                return ExitCode::from(2);
            }
        }
    }
    all.micros.sort_unstable();
    let n = all.micros.len();
    let errors: u64 = all
        .statuses
        .iter()
        .filter(|(s, _)| !(200..300).contains(*s))
        .map(|(_, c)| c)
        .sum();
    let statuses: Vec<String> = all
        .statuses
        .iter()
        .map(|(s, c)| format!("\"{s}\": {c}"))
        .collect();
    println!(
        "{{\"requests\": {n}, \"errors\": {errors}, \"rps\": {:.1}, \"p50_ms\": {:.2}, \"p99_ms\": {:.2}, \"max_ms\": {:.2}, \"statuses\": {{{}}}}}",
        n as f64 / args.seconds,
        percentile(&all.micros, 0.50),
        percentile(&all.micros, 0.99),
        percentile(&all.micros, 1.0),
        statuses.join(", ")
    );
    ExitCode::SUCCESS
}
