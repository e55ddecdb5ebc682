//! The `quiver` command: scheduler, executor, submit, sql and jobs.
//!
//! Errors are printed once, here, as `quiver: <what failed>: <why>`, with
//! secrets scrubbed. Exit codes: 0 success, 1 a job or statement failed or an
//! operation could not be done, 2 bad usage or configuration, 130 interrupted.

mod cli;

use std::process::ExitCode;

/// `--features mimalloc` builds with the allocator Ballista's own binaries
/// ship with; the default is the system allocator, which ran TPC-H as fast
/// with less memory (benches/README.md).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Stack of each runtime thread. Planning a query and encoding or decoding
/// its plan recurse once per plan node, and a plan joining many tables (the
/// Join Order Benchmark's queries in DataFusion's corpus join up to 17)
/// overflowed tokio's 2 MiB default and aborted the scheduler.
const THREAD_STACK_BYTES: usize = 16 * 1024 * 1024;

fn main() -> ExitCode {
    let cli = cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .thread_stack_size(THREAD_STACK_BYTES)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("quiver: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let code = runtime.block_on(cli::run(cli));
    // Background tasks (heartbeats, servers) must not keep the process alive.
    runtime.shutdown_timeout(std::time::Duration::from_millis(500));
    code
}
