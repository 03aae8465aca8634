//! Benchmark: do GetMe and ValidateToken stay fast while logins saturate the CPU?
//!
//! Starts authd in process on a fresh SQLite file, then measures `/api/v1/me` and
//! `/api/v1/auth/validate` latency alone, and again while `BENCH_LOGIN_WORKERS` (default
//! 32) clients log in as fast as they can. Hashing runs under HASH_CONCURRENCY (the core
//! count) with a bounded queue, so the logins past it are refused with 429 at once instead
//! of queueing. Run: `cargo run --release --example overload` (`BENCH_SECONDS`, default 5).

use std::time::{Duration, Instant};

use authd::{config::Settings, startup::Application};
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse battery";

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    let index = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples.get(index).copied().unwrap_or_default()
}

/// Calls GetMe and ValidateToken one after the other for `seconds`; their latencies.
async fn probe(http: &reqwest::Client, base: &str, access: &str, seconds: u64) -> anyhow::Result<Vec<Duration>> {
    let mut samples = Vec::new();
    let end = Instant::now() + Duration::from_secs(seconds);
    while Instant::now() < end {
        let start = Instant::now();
        let me = http.get(format!("{base}/api/v1/me")).bearer_auth(access).send().await?;
        anyhow::ensure!(me.status().is_success(), "GetMe answered {}", me.status());
        samples.push(start.elapsed());
        let start = Instant::now();
        let valid = http.post(format!("{base}/api/v1/auth/validate")).json(&json!({"token": access})).send().await?;
        anyhow::ensure!(valid.status().is_success(), "ValidateToken answered {}", valid.status());
        samples.push(start.elapsed());
    }
    Ok(samples)
}

fn report(what: &str, mut samples: Vec<Duration>) {
    let count = samples.len();
    let (p50, p99) = (percentile(&mut samples, 0.5), percentile(&mut samples, 0.99));
    println!("{what:<32} {count:>6} calls   p50 {:>8.2} ms   p99 {:>8.2} ms", ms(p50), ms(p99));
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let seconds = env_number("BENCH_SECONDS", 5);
    let workers = env_number("BENCH_LOGIN_WORKERS", 32);
    let dir = std::env::temp_dir().join(format!("authd-bench-{}", uuid::Uuid::new_v4().simple()));
    let mut settings = Settings::with_database(&authd::config::sqlite_url(&dir.join("authd.db")));
    settings.listen_addr = "127.0.0.1:0".parse()?;
    settings.throttle.login_per_ip = 0; // measure the hashing cap, not the rate limit
    settings.throttle.free_failures = u32::MAX;
    let hashing = (settings.passwords.concurrency, settings.passwords.queue_limit);
    let app = Application::build(settings).await?;
    let base = format!("http://{}", app.local_addr());
    let server = tokio::spawn(app.run_until(std::future::pending()));

    let http = reqwest::Client::new();
    let user = json!({"name": "Ada", "email": "ada@example.com", "location": "London", "password": PASSWORD});
    http.post(format!("{base}/api/v1/register-user")).json(&user).send().await?.error_for_status()?;
    let login = json!({"email": "ada@example.com", "password": PASSWORD});
    let body: Value =
        http.post(format!("{base}/api/v1/auth/login")).json(&login).send().await?.error_for_status()?.json().await?;
    let access = body["data"]["user_token"]["token"].as_str().unwrap_or_default().to_owned();

    println!(
        "HASH_CONCURRENCY {}, HASH_QUEUE_LIMIT {}, {workers} login workers, {seconds} s per phase",
        hashing.0, hashing.1
    );
    report("GetMe + ValidateToken, idle", probe(&http, &base, &access, seconds).await?);

    let end = Instant::now() + Duration::from_secs(seconds);
    let logins = (0..workers).map(|_| {
        let (http, base, login) = (reqwest::Client::new(), base.clone(), login.clone());
        tokio::spawn(async move {
            let (mut ok, mut refused, mut other, mut latencies) = (0u64, 0u64, 0u64, Vec::new());
            while Instant::now() < end {
                let start = Instant::now();
                match http
                    .post(format!("{base}/api/v1/auth/login"))
                    .json(&login)
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
                {
                    Ok(200) => ok += 1,
                    Ok(429) => refused += 1,
                    _ => other += 1,
                }
                latencies.push(start.elapsed());
            }
            (ok, refused, other, latencies)
        })
    });
    let logins = futures::future::join_all(logins.collect::<Vec<_>>());
    let (probed, logins) = tokio::join!(probe(&http, &base, &access, seconds), logins);
    report("GetMe + ValidateToken, logins on", probed?);
    let (mut ok, mut refused, mut other, mut latencies) = (0, 0, 0, Vec::new());
    for worker in logins {
        let (o, r, x, l) = worker?;
        (ok, refused, other) = (ok + o, refused + r, other + x);
        latencies.extend(l);
    }
    report("Login (all answers)", latencies);
    println!("logins: {ok} ok ({:.1}/s), {refused} refused with 429, {other} other", ok as f64 / seconds as f64);

    server.abort();
    let _ = std::fs::remove_dir_all(dir);
    Ok(())
}
