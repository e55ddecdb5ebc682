//! A TCP proxy in front of an S3 server whose every chunk, each way, can be
//! held back for a while: an S3 server that slows down mid-job.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::harness::{S3Like, S3Server};

/// `server`, reached through a proxy on 127.0.0.1 that holds back each chunk
/// it forwards by the current delay (none at first).
pub struct SlowLink {
    endpoint: String,
    env: Vec<(&'static str, String)>,
    delay_ms: Arc<AtomicU64>,
}

impl SlowLink {
    pub fn start(server: &S3Server) -> SlowLink {
        let target = server
            .endpoint
            .strip_prefix("http://")
            .expect("an http endpoint")
            .to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let delay_ms = Arc::new(AtomicU64::new(0));
        let delay = Arc::clone(&delay_ms);
        // Accepts for the life of the test process; each connection gets a
        // pump each way.
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(upstream) = TcpStream::connect(&target) else {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                };
                for (from, to) in [
                    (client.try_clone().unwrap(), upstream.try_clone().unwrap()),
                    (upstream, client),
                ] {
                    let delay = Arc::clone(&delay);
                    std::thread::spawn(move || pump(from, to, &delay));
                }
            }
        });
        let env = server
            .env()
            .into_iter()
            .map(|(k, v)| {
                if k == "AWS_ENDPOINT_URL" {
                    (k, endpoint.clone())
                } else {
                    (k, v)
                }
            })
            .collect();
        SlowLink {
            endpoint,
            env,
            delay_ms,
        }
    }

    /// From now on each chunk waits `delay` before it is forwarded.
    pub fn slow_down(&self, delay: Duration) {
        self.delay_ms.store(delay.as_millis() as u64, Ordering::SeqCst);
    }
}

/// Copies `from` to `to` in chunks of at most 16 KiB, each held back by the
/// delay in force when it arrived.
fn pump(mut from: TcpStream, mut to: TcpStream, delay_ms: &AtomicU64) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let wait = delay_ms.load(Ordering::SeqCst);
                if wait > 0 {
                    std::thread::sleep(Duration::from_millis(wait));
                }
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

impl S3Like for SlowLink {
    fn endpoint(&self) -> &str {
        &self.endpoint
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        self.env.clone()
    }
}
