//! What an S3 server can serve on this machine: the physical limit that
//! Quiver's S3 reads and writes are measured against.
//!
//! It talks to the server with `object_store`, the client Quiver itself
//! uses, from one process with little work per byte, so that what it
//! measures is the server (and the loopback), not the client:
//!
//! * one stream reading a whole object (`GET`), the largest under `--prefix`;
//! * the same object read as ranged `GET`s of `--range-mib` at 1, 2, 4, 8
//!   and 16 requests in flight;
//! * the time of one small ranged `GET` (64 KiB, a Parquet footer; 1 MiB, a
//!   column chunk's page) and of a `HEAD`, one request at a time;
//! * uploads: one `PUT` of 64 MiB, and a 256 MiB multipart upload of 8 MiB
//!   parts with 1, 4 and 8 parts in flight (the objects are deleted after).
//!
//! ```sh
//! AWS_ACCESS_KEY_ID=... AWS_SECRET_ACCESS_KEY=... \
//!   s3-ceiling --endpoint http://127.0.0.1:3900 --bucket tpch --prefix lineitem/ --out ceiling.json
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use clap::Parser;
use futures::{StreamExt, TryStreamExt, stream};
use object_store::aws::AmazonS3Builder;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};
use serde::Serialize;

#[derive(Parser)]
#[command(about = "Measures an S3 server's read and write throughput and request latency")]
struct Args {
    /// The server, e.g. http://127.0.0.1:3900.
    #[arg(long)]
    endpoint: String,
    /// The bucket to read from and write scratch objects into.
    #[arg(long)]
    bucket: String,
    /// Read the largest object under this prefix.
    #[arg(long, default_value = "")]
    prefix: String,
    /// The region the server expects in signatures.
    #[arg(long, default_value = "us-east-1")]
    region: String,
    /// Size of each ranged GET in the parallel read test.
    #[arg(long, default_value_t = 8)]
    range_mib: u64,
    /// Repetitions of each measurement; the median is reported.
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// Requests timed one at a time in the latency tests.
    #[arg(long, default_value_t = 40)]
    requests: usize,
    /// Skip the upload tests (a read-only bucket).
    #[arg(long)]
    no_writes: bool,
    /// Where to write the results as JSON.
    #[arg(long)]
    out: Option<std::path::PathBuf>,
}

#[derive(Serialize)]
struct Throughput {
    test: String,
    in_flight: usize,
    bytes: u64,
    seconds: f64,
    mb_per_s: f64,
}

#[derive(Serialize)]
struct Latency {
    test: String,
    bytes: u64,
    requests: usize,
    p50_ms: f64,
    p95_ms: f64,
}

#[derive(Serialize)]
struct Report {
    endpoint: String,
    object: String,
    object_bytes: u64,
    range_bytes: u64,
    throughput: Vec<Throughput>,
    latency: Vec<Latency>,
}

const MB: f64 = 1_000_000.0;
const MIB: u64 = 1 << 20;

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let store: Arc<dyn ObjectStore> = Arc::new(
        AmazonS3Builder::from_env()
            .with_endpoint(&args.endpoint)
            .with_allow_http(args.endpoint.starts_with("http://"))
            .with_bucket_name(&args.bucket)
            .with_region(&args.region)
            .build()
            .with_context(|| format!("building an S3 client for {} bucket {}", args.endpoint, args.bucket))?,
    );
    let prefix = Path::from(args.prefix.as_str());
    let largest = store
        .list(Some(&prefix))
        .try_fold(None::<object_store::ObjectMeta>, |best, m| async move {
            Ok(match best {
                Some(b) if b.size >= m.size => Some(b),
                _ => Some(m),
            })
        })
        .await
        .with_context(|| format!("listing s3://{}/{}", args.bucket, args.prefix))?;
    let Some(object) = largest else {
        bail!(
            "no object under s3://{}/{}: upload the benchmark data first",
            args.bucket,
            args.prefix
        );
    };
    let (location, size) = (object.location.clone(), object.size);
    eprintln!(
        "== reading s3://{}/{location} ({:.1} MB)",
        args.bucket,
        size as f64 / MB
    );

    let mut throughput = Vec::new();
    let whole = median_of(args.repeat, || read_whole(&store, &location)).await?;
    throughput.push(rate("GET whole object, one stream", 1, size, whole));
    let range = args.range_mib * MIB;
    for in_flight in [1, 2, 4, 8, 16] {
        let t = median_of(args.repeat, || read_ranges(&store, &location, size, range, in_flight)).await?;
        throughput.push(rate(
            &format!("ranged GET of {} MiB", args.range_mib),
            in_flight,
            size,
            t,
        ));
    }

    let mut latency = Vec::new();
    for len in [64 * 1024, MIB] {
        let times = time_each(args.requests, |i| {
            let (store, location) = (Arc::clone(&store), location.clone());
            let start = spread(i, args.requests, size.saturating_sub(len));
            async move { store.get_range(&location, start..start + len).await.map(|_| ()) }
        })
        .await?;
        latency.push(percentiles(&format!("ranged GET of {}", human(len)), len, times));
    }
    let times = time_each(args.requests, |_| {
        let (store, location) = (Arc::clone(&store), location.clone());
        async move { store.head(&location).await.map(|_| ()) }
    })
    .await?;
    latency.push(percentiles("HEAD", 0, times));

    if !args.no_writes {
        let scratch = Path::from("s3-ceiling-scratch");
        let body = Bytes::from((0..64 * MIB).map(|i| (i % 251) as u8).collect::<Vec<u8>>());
        let target = scratch.clone().join("put");
        let t = median_of(args.repeat, || async {
            let start = Instant::now();
            store.put(&target, PutPayload::from_bytes(body.clone())).await?;
            Ok(start.elapsed())
        })
        .await
        .context("a 64 MiB PUT")?;
        throughput.push(rate("PUT of 64 MiB", 1, body.len() as u64, t));
        for in_flight in [1, 4, 8] {
            let target = scratch.clone().join(format!("multipart-{in_flight}"));
            let t = median_of(args.repeat, || upload_parts(&store, &target, &body, 4, in_flight))
                .await
                .context("a multipart upload")?;
            throughput.push(rate(
                "multipart upload of 256 MiB in 8 MiB parts",
                in_flight,
                4 * body.len() as u64,
                t,
            ));
        }
        let scratch_objects: Vec<Path> = store.list(Some(&scratch)).map_ok(|m| m.location).try_collect().await?;
        for p in scratch_objects {
            store.delete(&p).await.with_context(|| format!("deleting {p}"))?;
        }
    }

    print_report(&throughput, &latency);
    let report = Report {
        endpoint: args.endpoint,
        object: format!("s3://{}/{location}", args.bucket),
        object_bytes: size,
        range_bytes: range,
        throughput,
        latency,
    };
    if let Some(out) = &args.out {
        std::fs::write(out, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("writing {}", out.display()))?;
    }
    Ok(())
}

/// Streams the whole object once.
async fn read_whole(store: &Arc<dyn ObjectStore>, location: &Path) -> Result<Duration> {
    let start = Instant::now();
    let mut body = store.get(location).await?.into_stream();
    let mut n = 0u64;
    while let Some(chunk) = body.next().await {
        n += chunk?.len() as u64;
    }
    let elapsed = start.elapsed();
    anyhow::ensure!(n > 0, "the server returned an empty body for {location}");
    Ok(elapsed)
}

/// Reads the object as consecutive ranges of `range` bytes, `in_flight` at a time.
async fn read_ranges(
    store: &Arc<dyn ObjectStore>,
    location: &Path,
    size: u64,
    range: u64,
    in_flight: usize,
) -> Result<Duration> {
    let start = Instant::now();
    let ranges: Vec<_> = (0..size)
        .step_by(range as usize)
        .map(|s| s..(s + range).min(size))
        .collect();
    let read: u64 = stream::iter(ranges)
        .map(|r| {
            let store = Arc::clone(store);
            let location = location.clone();
            async move { store.get_range(&location, r).await.map(|b| b.len() as u64) }
        })
        .buffer_unordered(in_flight)
        .try_fold(0, |acc, n| async move { Ok(acc + n) })
        .await?;
    anyhow::ensure!(read == size, "read {read} bytes of {size}");
    Ok(start.elapsed())
}

/// Uploads `parts` copies of `body` as one object, in 8 MiB parts, `in_flight` at a time.
async fn upload_parts(
    store: &Arc<dyn ObjectStore>,
    target: &Path,
    body: &Bytes,
    parts: usize,
    in_flight: usize,
) -> Result<Duration> {
    let start = Instant::now();
    let upload = store.put_multipart(target).await?;
    let mut writer = WriteMultipart::new_with_chunk_size(upload, (8 * MIB) as usize);
    for _ in 0..parts {
        for chunk in body.chunks((8 * MIB) as usize) {
            writer.wait_for_capacity(in_flight).await?;
            writer.write(chunk);
        }
    }
    writer.finish().await?;
    Ok(start.elapsed())
}

/// The median time of `repeat` runs of `run`.
async fn median_of<F, Fut>(repeat: usize, mut run: F) -> Result<Duration>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Duration>>,
{
    let mut times = Vec::with_capacity(repeat.max(1));
    for _ in 0..repeat.max(1) {
        times.push(run().await?);
    }
    times.sort();
    Ok(times[times.len() / 2])
}

/// Times `n` requests made one after another.
async fn time_each<F, Fut>(n: usize, mut request: F) -> Result<Vec<Duration>>
where
    F: FnMut(usize) -> Fut,
    Fut: Future<Output = object_store::Result<()>>,
{
    let mut times = Vec::with_capacity(n);
    for i in 0..n {
        let start = Instant::now();
        request(i).await?;
        times.push(start.elapsed());
    }
    Ok(times)
}

/// Offsets spread evenly over `0..=last`, so no two requests read the same bytes.
fn spread(i: usize, n: usize, last: u64) -> u64 {
    if n <= 1 { 0 } else { last / (n as u64 - 1) * i as u64 }
}

fn rate(test: &str, in_flight: usize, bytes: u64, time: Duration) -> Throughput {
    let seconds = time.as_secs_f64();
    Throughput {
        test: test.to_owned(),
        in_flight,
        bytes,
        seconds,
        mb_per_s: bytes as f64 / MB / seconds,
    }
}

fn percentiles(test: &str, bytes: u64, mut times: Vec<Duration>) -> Latency {
    times.sort();
    let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize].as_secs_f64() * 1000.0;
    Latency {
        test: test.to_owned(),
        bytes,
        requests: times.len(),
        p50_ms: at(0.5),
        p95_ms: at(0.95),
    }
}

fn human(bytes: u64) -> String {
    if bytes >= MIB {
        format!("{} MiB", bytes / MIB)
    } else {
        format!("{} KiB", bytes / 1024)
    }
}

fn print_report(throughput: &[Throughput], latency: &[Latency]) {
    println!("| throughput | in flight | MB | s | MB/s |\n|---|---:|---:|---:|---:|");
    for t in throughput {
        println!(
            "| {} | {} | {:.0} | {:.2} | {:.0} |",
            t.test,
            t.in_flight,
            t.bytes as f64 / MB,
            t.seconds,
            t.mb_per_s
        );
    }
    println!("\n| one request at a time | requests | p50 ms | p95 ms |\n|---|---:|---:|---:|");
    for l in latency {
        println!("| {} | {} | {:.1} | {:.1} |", l.test, l.requests, l.p50_ms, l.p95_ms);
    }
}
