//! Integration tests: real `quiver` processes, a real S3 server, real results.
//!
//! * `harness`: starting s3s-fs, a scheduler and executors on 127.0.0.1;
//! * `data`: the test data set and its expected answers;
//! * `cluster`: jobs through `quiver submit` and `quiver sql -e`, reads and writes in S3;
//! * `jobs_api`: the REST job service, history across restarts, retention, tokens, metrics;
//! * `ui`: every page in headless Chromium, with screenshots kept as artifacts;
//! * `delta`: Delta tables read and written by the cluster, with the Python `deltalake` package as the other side;
//! * `bad_input`: every kind of bad input, its message, and a healthy cluster after it;
//! * `concurrency`: twenty jobs at once, short jobs beside a long one, a full queue;
//! * `faults`: executors stopped and killed mid-query (a three-stage query and TPC-H Q21), the last one lost, one coming back, a scheduler restart, S3 stopped or slowed mid-job;
//! * `fuzz`: random SQL from a grammar and damaged CSV, JSON and Parquet files, all answered, none panicking;
//! * `memory`: an executor under --memory-limit spilling a sort and an aggregation, surviving a join that cannot fit;
//! * `slow_link`: a proxy that slows an S3 server down mid-test;
//! * `tally`: the reliability tests' figures, summed by `scripts/test` into one line;
//! * `security`: secrets kept out of every record, local paths refused in a cluster, token-file and endpoint checks;
//! * `python`: the Python package's pytest suite (client, Airflow provider, Flight SQL, notebook);
//! * `shell`: the interactive `quiver sql` shell, driven through a terminal;
//! * `tpch`: all 22 TPC-H queries (SF0.01) on a cluster give DuckDB's answers;
//! * `slt`: SQL behaviour pinned in `tests/slt/*.slt`, run against the cluster;
//! * `corpus`: DataFusion's own sqllogictest corpus on the cluster, compared with single-node DataFusion;
//! * `stack`: the Docker Compose stack on this machine's Docker engine (`scripts/stack`);
//! * `tools`: `quiver fs` against the S3 server, `quiver health`, `quiver config keys`.

mod bad_input;
mod browser;
mod cluster;
mod concurrency;
mod corpus;
mod data;
mod delta;
mod faults;
mod fuzz;
mod harness;
mod jobs_api;
mod memory;
mod python;
mod security;
mod shell;
mod slow_link;
mod slt;
mod stack;
mod tally;
mod tools;
mod tpch;
mod ui;
