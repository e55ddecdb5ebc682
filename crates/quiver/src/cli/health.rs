//! `quiver health [URL...]`: the containers' health check, without curl.
//!
//! Probes each URL and exits 0 if one answers 2xx. With no URL it probes what
//! a `quiver` server in this container serves: the scheduler's `/healthz` on
//! `QUIVER_PORT` and the executor's `/readyz` on `QUIVER_HEALTH_PORT` (the
//! ports the servers themselves read, 50050 and 50053 by default).

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

#[derive(Debug, Args)]
pub struct HealthArgs {
    /// URLs to probe; healthy if any answers 2xx.
    urls: Vec<String>,
    /// Seconds to wait for each answer.
    #[arg(long, default_value_t = 3)]
    timeout: u64,
}

fn default_urls() -> Vec<String> {
    let port = |var: &str, default: u16| std::env::var(var).ok().and_then(|p| p.parse().ok()).unwrap_or(default);
    vec![
        format!(
            "http://127.0.0.1:{}/healthz",
            port("QUIVER_PORT", quiver_core::api::DEFAULT_SCHEDULER_PORT)
        ),
        format!(
            "http://127.0.0.1:{}/readyz",
            port("QUIVER_HEALTH_PORT", quiver_executor::DEFAULT_HEALTH_PORT)
        ),
    ]
}

pub async fn run(args: HealthArgs) -> anyhow::Result<ExitCode> {
    let urls = if args.urls.is_empty() {
        default_urls()
    } else {
        args.urls
    };
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(args.timeout.max(1)))
        .build()?;
    let mut problems = Vec::new();
    for url in &urls {
        match client.get(url).send().await {
            Ok(r) if r.status().is_success() => {
                println!("{url}: {}", r.status());
                return Ok(ExitCode::SUCCESS);
            }
            Ok(r) => {
                let status = r.status();
                let body = r.text().await.unwrap_or_default();
                problems.push(format!("{url}: {status} {}", body.trim()));
            }
            Err(e) => problems.push(format!("{url}: {}", quiver_core::messages::root_cause(&e))),
        }
    }
    eprintln!("quiver: unhealthy: {}", problems.join("; "));
    Ok(ExitCode::FAILURE)
}
