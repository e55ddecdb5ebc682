//! Real processes for integration tests: an S3 server, a scheduler, executors.
//!
//! Everything listens on 127.0.0.1 on free ports. Child processes get
//! `PR_SET_PDEATHSIG`, so they die with the test binary even if it crashes.
//!
//! The S3 server is `s3s-fs` (file-backed, checks SigV4 credentials): the
//! closest thing to MinIO that runs here. `.ci/run` installs it; a test that
//! cannot find it fails with a message saying how to install it.

use std::io::Read;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use quiver_core::api::{ExecutorInfo, ExecutorState, JobDetail, JobState, SubmitJob};
use serde_json::Value;

pub const ACCESS_KEY: &str = "quiver-test-key";
pub const SECRET_KEY: &str = "quiver-test-secret-5f2b9c";
/// The secret a test cluster's scheduler and executors share.
pub const CLUSTER_SECRET: &str = "test-cluster-secret-0a9e4d7c";

/// The `quiver` binary under test.
pub fn quiver_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_quiver"))
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Makes a child die when the thread that started it does.
fn die_with_parent(cmd: &mut Command) -> &mut Command {
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        })
    }
}

type SpawnRequest = (Command, std::sync::mpsc::Sender<std::io::Result<Child>>);

/// Starts servers from one thread that lives as long as the test process:
/// `PR_SET_PDEATHSIG` fires when the *thread* that spawned a child exits, and
/// test threads end with their test.
fn spawn_long_lived(cmd: Command) -> std::io::Result<Child> {
    static SPAWNER: OnceLock<std::sync::Mutex<std::sync::mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    let sender = SPAWNER.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .unwrap();
        std::sync::Mutex::new(tx)
    });
    let (tx, rx) = std::sync::mpsc::channel();
    sender.lock().unwrap().send((cmd, tx)).unwrap();
    rx.recv().unwrap()
}

/// A child process with its log captured to a file.
pub struct Proc {
    child: Child,
    pub log: PathBuf,
}

impl Proc {
    pub fn spawn(name: &str, cmd: &mut Command, dir: &Path) -> Proc {
        let log = dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).unwrap();
        die_with_parent(cmd)
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .stdin(Stdio::null());
        let program = format!("{:?}", cmd.get_program());
        let child = spawn_long_lived(std::mem::replace(cmd, Command::new("true")))
            .unwrap_or_else(|e| panic!("cannot start {name} ({program}): {e}"));
        Proc { child, log }
    }

    pub fn log_text(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits up to `timeout` for the process to exit; its
    /// exit status, or None if it was still running (it is then killed).
    pub fn terminate(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        self.kill();
        None
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn wait_for(what: &str, timeout: Duration, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if ready() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out after {timeout:?} waiting for {what}");
}

/// Any S3-compatible server the tests run against.
pub trait S3Like {
    /// The endpoint URL.
    fn endpoint(&self) -> &str;
    /// AWS_* variables that point at the server.
    fn env(&self) -> Vec<(&'static str, String)>;
}

impl S3Like for S3Server {
    fn endpoint(&self) -> &str {
        &self.endpoint
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        S3Server::env(self)
    }
}

/// A `moto_server`: in memory and without authentication, but its conditional
/// put (`If-None-Match`) is atomic, which Delta commits need; s3s-fs's is not.
pub struct MotoServer {
    pub endpoint: String,
    _proc: Proc,
    _dir: tempfile::TempDir,
}

impl MotoServer {
    pub fn start() -> MotoServer {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let bin = which("moto_server")
            .unwrap_or_else(|| panic!("moto_server is not installed: pip install 'moto[server]' (scripts/test does)"));
        let proc = Proc::spawn(
            "moto",
            Command::new(bin).args(["-H", "127.0.0.1", "-p", &port.to_string()]),
            dir.path(),
        );
        let endpoint = format!("http://127.0.0.1:{port}");
        let probe = format!("{endpoint}/");
        wait_for("moto_server to answer", Duration::from_secs(60), || {
            reqwest::blocking::get(&probe).is_ok()
        });
        MotoServer {
            endpoint,
            _proc: proc,
            _dir: dir,
        }
    }

    pub fn create_bucket(&self, name: &str) {
        let r = reqwest::blocking::Client::new()
            .put(format!("{}/{name}", self.endpoint))
            .send()
            .unwrap();
        assert!(r.status().is_success(), "cannot create bucket {name}: {}", r.status());
    }
}

impl S3Like for MotoServer {
    fn endpoint(&self) -> &str {
        &self.endpoint
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", "moto-key".into()),
            ("AWS_SECRET_ACCESS_KEY", "moto-secret".into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
        ]
    }
}

/// An `s3s-fs` server with one pair of credentials.
pub struct S3Server {
    pub endpoint: String,
    pub root: PathBuf,
    _proc: Proc,
    _dir: tempfile::TempDir,
}

impl S3Server {
    pub fn start() -> S3Server {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("data");
        std::fs::create_dir_all(&root).unwrap();
        let port = free_port();
        let proc = Self::spawn(port, &root, dir.path());
        S3Server {
            endpoint: format!("http://127.0.0.1:{port}"),
            root,
            _proc: proc,
            _dir: dir,
        }
    }

    /// Stops the server (SIGKILL); its data stays.
    pub fn stop(&mut self) {
        self._proc.kill();
    }

    /// Starts the server again on the same port, over the same data.
    pub fn restart(&mut self) {
        let port: u16 = self.endpoint.rsplit(':').next().unwrap().parse().unwrap();
        self._proc = Self::spawn(port, &self.root, self._dir.path());
    }

    fn spawn(port: u16, root: &Path, dir: &Path) -> Proc {
        let bin = which("s3s-fs").unwrap_or_else(|| {
            panic!(
                "s3s-fs is not installed: run `cargo install s3s-fs@0.14.1 --locked --features binary` (.ci/run does)"
            )
        });
        let proc = Proc::spawn(
            "s3s-fs",
            Command::new(bin)
                .args(["--host", "127.0.0.1", "--port", &port.to_string()])
                .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
                .arg(root),
            dir,
        );
        wait_for("s3s-fs to listen", Duration::from_secs(20), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        proc
    }

    /// Creates a bucket (a directory, for s3s-fs).
    pub fn create_bucket(&self, name: &str) {
        std::fs::create_dir_all(self.root.join(name)).unwrap();
    }

    /// AWS_* variables that point at this server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
        ]
    }

    pub fn store(&self, bucket: &str) -> AmazonS3 {
        AmazonS3Builder::new()
            .with_bucket_name(bucket)
            .with_endpoint(&self.endpoint)
            .with_allow_http(true)
            .with_region("us-east-1")
            .with_access_key_id(ACCESS_KEY)
            .with_secret_access_key(SECRET_KEY)
            .with_virtual_hosted_style_request(false)
            .build()
            .unwrap()
    }

    pub fn put(&self, bucket: &str, key: &str, bytes: impl Into<PutPayload>) {
        let store = self.store(bucket);
        block_on(async { store.put(&ObjectPath::from(key), bytes.into()).await.unwrap() });
    }

    pub fn get(&self, bucket: &str, key: &str) -> Vec<u8> {
        let store = self.store(bucket);
        block_on(async {
            store
                .get(&ObjectPath::from(key))
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap()
                .to_vec()
        })
    }

    /// Keys under a prefix.
    pub fn list(&self, bucket: &str, prefix: &str) -> Vec<String> {
        use futures::TryStreamExt;
        let store = self.store(bucket);
        block_on(async {
            let prefix = ObjectPath::from(prefix);
            let objects: Vec<_> = store.list(Some(&prefix)).try_collect().await.unwrap();
            let mut keys: Vec<String> = objects.into_iter().map(|o| o.location.to_string()).collect();
            keys.sort();
            keys
        })
    }
}

pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

pub fn which(name: &str) -> Option<PathBuf> {
    let paths = std::env::var_os("PATH")?;
    let mut dirs: Vec<PathBuf> = std::env::split_paths(&paths).collect();
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(PathBuf::from(home).join(".cargo/bin"));
    }
    dirs.into_iter().map(|d| d.join(name)).find(|p| p.is_file())
}

/// The local directories a test cluster's jobs may use: the temporary
/// directory (test data, outputs), the repository (`jobs/data`) and the
/// sqllogictest corpus crate's directory (DataFusion's test harness writes
/// some of the corpus's tables there). Anything else, `/etc` included,
/// stays refused.
pub fn local_paths_allowed() -> Vec<std::ffi::OsString> {
    let corpus = &crate::corpus::corpus_source().0;
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    vec![
        "--allow-local-paths".into(),
        std::env::temp_dir().into(),
        repo.into(),
        corpus.into(),
    ]
}

/// A scheduler and executors, as separate `quiver` processes.
pub struct Cluster {
    pub port: u16,
    pub url: String,
    pub dir: PathBuf,
    pub env: Vec<(&'static str, String)>,
    pub scheduler: Proc,
    pub executors: Vec<(String, Proc)>,
    pub history: PathBuf,
    pub token: Option<String>,
    /// Extra arguments every executor of this cluster starts with.
    pub executor_args: Vec<String>,
    /// The CA clients trust when the scheduler serves TLS.
    pub ca_file: Option<PathBuf>,
    _tmp: Option<tempfile::TempDir>,
}

/// A CA, and a certificate for 127.0.0.1 and localhost that it signed,
/// made for one test and written as PEM files.
pub struct TestCa {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TestCa {
    pub fn make(dir: &std::path::Path) -> TestCa {
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name.push(DnType::CommonName, "Quiver test CA");
        let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
        let key = KeyPair::generate().unwrap();
        let mut leaf = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
        leaf.distinguished_name.push(DnType::CommonName, "quiver scheduler");
        let cert = leaf.signed_by(&key, &ca).unwrap();
        let out = TestCa {
            ca: dir.join("ca.pem"),
            cert: dir.join("scheduler.pem"),
            key: dir.join("scheduler-key.pem"),
        };
        std::fs::write(&out.ca, ca.pem()).unwrap();
        std::fs::write(&out.cert, cert.pem()).unwrap();
        std::fs::write(&out.key, key.serialize_pem()).unwrap();
        out
    }
}

pub struct ClusterOptions {
    pub executors: usize,
    pub slots: usize,
    pub token: Option<String>,
    pub executor_timeout_secs: u64,
    pub scheduler_args: Vec<String>,
    pub executor_args: Vec<String>,
    /// Serve the scheduler's and the executors' ports over TLS, with a CA
    /// made for this cluster.
    pub tls: bool,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        Self {
            executors: 2,
            slots: 2,
            token: None,
            executor_timeout_secs: 30,
            scheduler_args: vec![],
            executor_args: vec![],
            tls: false,
        }
    }
}

impl Cluster {
    pub fn start(s3: &dyn S3Like, options: ClusterOptions) -> Cluster {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_owned();
        let history = dir.join("history");
        let mut cluster = Cluster {
            port: free_port(),
            url: String::new(),
            dir: dir.clone(),
            env: s3.env(),
            scheduler: Proc::spawn("placeholder", &mut Command::new("true"), &dir),
            executors: vec![],
            history,
            token: options.token.clone(),
            executor_args: vec![],
            ca_file: None,
            _tmp: Some(tmp),
        };
        let mut options = options;
        if options.tls {
            let ca = TestCa::make(&dir);
            options.scheduler_args.push("--tls-cert".into());
            options.scheduler_args.push(ca.cert.display().to_string());
            options.scheduler_args.push("--tls-key".into());
            options.scheduler_args.push(ca.key.display().to_string());
            options.scheduler_args.push("--executor-tls".into());
            options.scheduler_args.push("--ca-file".into());
            options.scheduler_args.push(ca.ca.display().to_string());
            options.executor_args.push("--tls-cert".into());
            options.executor_args.push(ca.cert.display().to_string());
            options.executor_args.push("--tls-key".into());
            options.executor_args.push(ca.key.display().to_string());
            cluster.ca_file = Some(ca.ca);
        }
        let scheme = if options.tls { "https" } else { "http" };
        cluster.url = format!("{scheme}://127.0.0.1:{}", cluster.port);
        cluster.scheduler = cluster.spawn_scheduler(&options);
        cluster.wait_http();
        cluster.executor_args = options.executor_args.clone();
        for i in 0..options.executors {
            let e = cluster.spawn_executor(i, options.slots);
            cluster.executors.push(e);
        }
        let want = options.executors;
        wait_for("executors to register", Duration::from_secs(60), || {
            cluster.executors_alive().len() >= want
        });
        cluster
    }

    pub fn spawn_scheduler(&self, options: &ClusterOptions) -> Proc {
        let mut cmd = Command::new(quiver_bin());
        cmd.arg("scheduler")
            .args([
                "--bind",
                "127.0.0.1",
                "--port",
                &self.port.to_string(),
                "--external-host",
                "127.0.0.1",
            ])
            .args(["--executor-timeout", &options.executor_timeout_secs.to_string()])
            .arg("--history")
            .arg(&self.history)
            .args(local_paths_allowed())
            .args(&options.scheduler_args)
            .env("QUIVER_LOG", "info")
            .env(quiver_core::cluster_secret::ENV, CLUSTER_SECRET)
            .env_remove("QUIVER_SCHEDULER")
            .env_remove("QUIVER_TOKEN")
            // Relative local paths in jobs land in the cluster's own directory,
            // never in the checkout.
            .current_dir(&self.dir);
        if let Some(t) = &options.token {
            cmd.env("QUIVER_TOKEN", t);
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        Proc::spawn("scheduler", &mut cmd, &self.dir)
    }

    pub fn spawn_executor(&self, i: usize, slots: usize) -> (String, Proc) {
        let id = format!("exec-{i}-{}", free_port());
        let mut cmd = self.executor_command(&id, slots);
        (id.clone(), Proc::spawn(&id, &mut cmd, &self.dir))
    }

    /// The command that starts executor `id` of this cluster, with the
    /// cluster secret in its environment.
    pub fn executor_command(&self, id: &str, slots: usize) -> Command {
        self.executor_command_on(id, slots, free_port())
    }

    /// [`Self::executor_command`], with its gRPC port (where tasks are pushed).
    pub fn executor_command_on(&self, id: &str, slots: usize, grpc_port: u16) -> Command {
        let mut cmd = Command::new(quiver_bin());
        cmd.arg("executor")
            .args(["--scheduler", &self.url])
            .args(["--bind", "127.0.0.1", "--external-host", "127.0.0.1"])
            .args(["--flight-port", &free_port().to_string()])
            .args(["--grpc-port", &grpc_port.to_string()])
            .args(["--health-port", &free_port().to_string()])
            .args(["--slots", &slots.to_string(), "--heartbeat-interval", "1"])
            .args(["--id", id])
            .args(local_paths_allowed())
            .args(&self.executor_args)
            .arg("--work-dir")
            .arg(self.dir.join(id))
            .env("QUIVER_LOG", "info")
            .env(quiver_core::cluster_secret::ENV, CLUSTER_SECRET)
            .env_remove("QUIVER_SCHEDULER")
            .env_remove(quiver_core::tls::CA_FILE_ENV)
            .current_dir(&self.dir);
        if let Some(ca) = &self.ca_file {
            cmd.env(quiver_core::tls::CA_FILE_ENV, ca);
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }

    pub fn wait_http(&self) {
        let url = format!("{}/healthz", self.url);
        let http = self.http();
        wait_for("the scheduler to answer /healthz", Duration::from_secs(30), || {
            http.get(&url).send().map(|r| r.status().is_success()).unwrap_or(false)
        });
    }

    pub fn http(&self) -> reqwest::blocking::Client {
        let mut http = reqwest::blocking::Client::builder().timeout(Duration::from_secs(60));
        if let Some(ca) = &self.ca_file {
            let pem = std::fs::read(ca).unwrap();
            http = http.add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap());
        }
        http.build().unwrap()
    }

    fn with_token(&self, r: reqwest::blocking::RequestBuilder) -> reqwest::blocking::RequestBuilder {
        match &self.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    pub fn get(&self, path: &str) -> reqwest::blocking::Response {
        self.with_token(self.http().get(format!("{}{path}", self.url)))
            .send()
            .unwrap()
    }

    pub fn post(&self, path: &str, body: &Value) -> reqwest::blocking::Response {
        self.with_token(self.http().post(format!("{}{path}", self.url)).json(body))
            .send()
            .unwrap()
    }

    pub fn get_json(&self, path: &str) -> Value {
        let r = self.get(path);
        let status = r.status();
        let text = r.text().unwrap();
        assert!(status.is_success(), "GET {path}: {status}: {text}");
        serde_json::from_str(&text).unwrap()
    }

    pub fn executors_alive(&self) -> Vec<ExecutorInfo> {
        let r = self.get("/api/v1/executors");
        if !r.status().is_success() {
            return vec![];
        }
        let all: Vec<ExecutorInfo> = r.json().unwrap_or_default();
        all.into_iter().filter(|e| e.state == ExecutorState::Alive).collect()
    }

    pub fn submit_rest(&self, sql: &str, name: &str) -> String {
        let body = serde_json::to_value(SubmitJob {
            sql: sql.into(),
            name: Some(name.into()),
            ..Default::default()
        })
        .unwrap();
        let r = self.post("/api/v1/jobs", &body);
        let status = r.status();
        let v: Value = r.json().unwrap();
        assert_eq!(status.as_u16(), 201, "{v}");
        v["id"].as_str().unwrap().to_owned()
    }

    /// The integer column `column` of a job's stored result, row by row.
    pub fn result_column(&self, id: &str, column: &str) -> Vec<u64> {
        let result = self.get_json(&format!("/api/v1/jobs/{id}/result"));
        let rows = result["rows"]
            .as_array()
            .unwrap_or_else(|| panic!("no rows in {result}"));
        rows.iter()
            .map(|r| {
                r[column]
                    .as_u64()
                    .unwrap_or_else(|| panic!("no integer {column} in {result}"))
            })
            .collect()
    }

    pub fn job(&self, id: &str) -> JobDetail {
        serde_json::from_value(self.get_json(&format!("/api/v1/jobs/{id}"))).unwrap()
    }

    pub fn wait_job(&self, id: &str, timeout: Duration) -> JobDetail {
        let deadline = Instant::now() + timeout;
        loop {
            let job = self.job(id);
            if job.summary.state.is_terminal() {
                return job;
            }
            assert!(
                Instant::now() < deadline,
                "job {id} still {} after {timeout:?}",
                job.summary.state
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn wait_state(&self, id: &str, state: JobState, timeout: Duration) -> JobDetail {
        let deadline = Instant::now() + timeout;
        loop {
            let job = self.job(id);
            if job.summary.state == state {
                return job;
            }
            assert!(
                Instant::now() < deadline,
                "job {id} is {} not {state} after {timeout:?}",
                job.summary.state
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A `quiver` command with this cluster's scheduler and S3 in its environment.
    pub fn quiver(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(quiver_bin());
        cmd.args(args)
            .env("QUIVER_SCHEDULER", &self.url)
            .env("QUIVER_HISTORY_FILE", self.dir.join("shell_history"))
            .env_remove("QUIVER_LOG")
            .env_remove("QUIVER_TOKEN")
            .env_remove(quiver_core::tls::CA_FILE_ENV);
        if let Some(ca) = &self.ca_file {
            cmd.env(quiver_core::tls::CA_FILE_ENV, ca);
        }
        if let Some(t) = &self.token {
            cmd.env("QUIVER_TOKEN", t);
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        die_with_parent(&mut cmd);
        cmd
    }

    /// Runs `quiver submit` on a script; returns (exit code, stdout, stderr).
    pub fn submit(&self, sql: &str, extra: &[&str]) -> Run {
        let file = self.dir.join(format!("script-{}.sql", free_port()));
        std::fs::write(&file, sql).unwrap();
        let mut args = vec!["submit", file.to_str().unwrap()];
        args.extend_from_slice(extra);
        Run::from(self.quiver(&args).output().unwrap())
    }

    /// Runs `quiver sql -e`.
    pub fn sql(&self, sql: &str, extra: &[&str]) -> Run {
        let mut args = vec!["sql", "-e", sql];
        args.extend_from_slice(extra);
        Run::from(self.quiver(&args).output().unwrap())
    }

    /// Everything the processes logged, for secret checks and failure reports.
    pub fn logs(&self) -> String {
        let mut all = self.scheduler.log_text();
        for (_, e) in &self.executors {
            all.push_str(&e.log_text());
        }
        all
    }
}

/// The outcome of a `quiver` command.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(o: Output) -> Self {
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl Run {
    #[track_caller]
    pub fn ok(&self) -> &Self {
        assert_eq!(
            self.code, 0,
            "command failed\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }

    #[track_caller]
    pub fn failed(&self) -> &Self {
        assert_ne!(
            self.code, 0,
            "command succeeded but should have failed\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }
}

/// The S3 server and cluster most tests share (started on first use).
pub struct Shared {
    pub s3: S3Server,
    pub cluster: Cluster,
}

pub fn shared() -> &'static Shared {
    static SHARED: OnceLock<Shared> = OnceLock::new();
    SHARED.get_or_init(|| {
        let s3 = crate::data::sample_lake();
        let cluster = Cluster::start(&s3, ClusterOptions::default());
        Shared { s3, cluster }
    })
}

/// Parses CSV output (`--format csv`) into rows.
pub fn csv_rows(text: &str) -> Vec<Vec<String>> {
    text.lines()
        .map(|l| l.split(',').map(str::to_owned).collect())
        .collect()
}

/// Every file under `dir`, recursively.
pub fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = vec![];
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}
