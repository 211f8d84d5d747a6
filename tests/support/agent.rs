//! Test support for the agent: a real S3 server (`rclone serve s3`) and a Pushgateway on
//! 127.0.0.1, one per test, and a runner for the `baas` binary.
//!
//! Volumes are backed up from `/data/<pvc>` exactly as in a pod: the agent runs in a private
//! mount namespace (`unshare --mount`) in which the test's directory is bind-mounted at /data,
//! so the host's /data is never touched (only created empty as a mount point if missing).
//!
//! restic is the version the project pins, from `scripts/lib/build-go-tool.sh restic` (built
//! once, then cached), or the binary `BAAS_TEST_RESTIC` names; never a `restic` found on PATH,
//! which may be Debian's 0.14 without the exit codes and `restore <id>:<path>` the agent needs.
//! The other tools come from `scripts/setup`. When one is missing the test fails with that
//! hint in CI (`CI` set) and is skipped with a note elsewhere.
#![allow(dead_code)]

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use baas::crd::RunState;
use baas::report::RunReport;

/// Access key of the test S3 server.
pub const ACCESS_KEY: &str = "baastestkey";
/// Secret key of the test S3 server.
pub const SECRET_KEY: &str = "baastestsecret";
/// Repository password used unless a test sets another.
pub const PASSWORD: &str = "correct horse battery staple";

/// The oldest restic the agent works with.
const RESTIC_MINIMUM: (u32, u32) = (0, 17);

/// The pinned restic, found once per test binary; `None` (skip) outside CI when it is missing.
pub fn restic_binary() -> Option<PathBuf> {
    static RESTIC: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match RESTIC.get_or_init(find_restic) {
        Ok(path) => Some(path.clone()),
        Err(hint) => {
            if std::env::var_os("CI").is_some() {
                panic!("{hint}");
            }
            eprintln!("skipping: {hint}");
            None
        }
    }
}

fn find_restic() -> Result<PathBuf, String> {
    let path = match std::env::var_os("BAAS_TEST_RESTIC") {
        Some(path) => PathBuf::from(path),
        None => {
            let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/lib/build-go-tool.sh");
            // stderr stays the test's: a first build takes minutes and says so.
            let out = Command::new(&script)
                .arg("restic")
                .stdin(Stdio::null())
                .stderr(Stdio::inherit())
                .output()
                .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
            if !out.status.success() {
                return Err(format!(
                    "{} restic failed ({}): install Go, or set BAAS_TEST_RESTIC",
                    script.display(),
                    out.status
                ));
            }
            PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
        }
    };
    let version = Command::new(&path)
        .arg("version")
        .output()
        .map_err(|e| format!("cannot run {}: {e}", path.display()))?;
    let text = String::from_utf8_lossy(&version.stdout);
    let parsed = text
        .split_whitespace()
        .nth(1)
        .and_then(|v| {
            let mut parts = v.split('.').map(|p| p.parse::<u32>().ok());
            Some((parts.next()??, parts.next()??))
        })
        .ok_or_else(|| format!("{} version printed {text:?}", path.display()))?;
    if parsed < RESTIC_MINIMUM {
        return Err(format!(
            "{} is {}; the agent needs restic 0.17 or later",
            path.display(),
            text.trim()
        ));
    }
    reachable_by_everyone(&path)
}

/// The cache lives under the home directory, which other users (the agent run as nobody)
/// often cannot enter: then a copy in the temporary directory is used.
fn reachable_by_everyone(path: &Path) -> Result<PathBuf, String> {
    use std::os::unix::fs::PermissionsExt;
    let open_to_all = |p: &Path, bits: u32| {
        std::fs::metadata(p).is_ok_and(|m| m.permissions().mode() & bits == bits)
    };
    let reachable = open_to_all(path, 0o005)
        && path
            .ancestors()
            .skip(1)
            .filter(|a| !a.as_os_str().is_empty())
            .all(|a| open_to_all(a, 0o001));
    if reachable {
        return Ok(path.to_path_buf());
    }
    let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let dir = std::env::temp_dir().join(format!("baas-test-restic-{size}"));
    let copy = dir.join("restic");
    if std::fs::metadata(&copy).is_ok_and(|m| m.len() == size) {
        return Ok(copy);
    }
    let copy_error = |e: std::io::Error| format!("copying {} for other users: {e}", path.display());
    std::fs::create_dir_all(&dir).map_err(copy_error)?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).map_err(copy_error)?;
    // Copy then rename: test binaries running at the same time never see half a file.
    let partial = dir.join(format!("restic.{}", std::process::id()));
    std::fs::copy(path, &partial).map_err(copy_error)?;
    std::fs::set_permissions(&partial, std::fs::Permissions::from_mode(0o755))
        .map_err(copy_error)?;
    std::fs::rename(&partial, &copy).map_err(copy_error)?;
    Ok(copy)
}

/// Finds a tool from `env` or PATH (or `fallback`); `None` (skip) outside CI when missing.
pub fn tool(name: &str, env: &str, fallback: Option<PathBuf>) -> Option<PathBuf> {
    let found = std::env::var_os(env)
        .map(PathBuf::from)
        .filter(|p| p.exists())
        .or_else(|| {
            std::env::var_os("PATH").and_then(|paths| {
                std::env::split_paths(&paths)
                    .map(|dir| dir.join(name))
                    .find(|p| p.is_file())
            })
        })
        .or_else(|| fallback.filter(|p| p.is_file()));
    if found.is_none() {
        let hint = format!("{name} is missing: run scripts/setup (or set {env})");
        if std::env::var_os("CI").is_some() {
            panic!("{hint}");
        }
        eprintln!("skipping: {hint}");
    }
    found
}

/// Whether the agent can run in a private mount namespace (root with `unshare`).
pub fn can_mount() -> bool {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"));
    if !root {
        let hint = "volume tests need root to bind-mount their data at /data";
        if std::env::var_os("CI").is_some() {
            panic!("{hint}");
        }
        eprintln!("skipping: {hint}");
        return false;
    }
    std::fs::create_dir_all("/data").expect("/data can be created as root");
    tool("unshare", "BAAS_TEST_UNSHARE", None).is_some()
        && tool("setpriv", "BAAS_TEST_SETPRIV", None).is_some()
}

/// A port that was free a moment ago and that no other server of this test process was given:
/// the tests of one binary start their servers side by side.
fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port on 127.0.0.1")
            .port();
        let mut given = GIVEN.lock().expect("the ports given");
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// Whether a server listens on `port`. A connect to a local port nobody listens on can
/// connect to itself (the kernel may pick that very port as the source, and the two halves
/// of the handshake meet): such a connection says nothing about the server.
fn listens(port: u16) -> bool {
    TcpStream::connect(("127.0.0.1", port))
        .and_then(|s| Ok(s.local_addr()? != s.peer_addr()?))
        .unwrap_or(false)
}

fn wait_for_port(port: u16, child: &mut Child, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if listens(port) {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited early: {status}");
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("{what} did not listen on 127.0.0.1:{port} within 20 s");
}

/// A short-lived S3 server; stopped when dropped.
pub struct S3Server {
    child: Child,
    _dir: tempfile::TempDir,
    /// `http://127.0.0.1:<port>`.
    pub endpoint: String,
}

impl S3Server {
    /// Starts a server with an empty store, or `None` when rclone is missing outside CI.
    pub fn start() -> Option<S3Server> {
        // Where scripts/setup installs it.
        let fallback = std::env::var_os("BAAS_S3_VENV")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/baas/s3")))
            .map(|venv| venv.join("bin/rclone"));
        let rclone = tool("rclone", "BAAS_TEST_RCLONE", fallback)?;
        restic_binary()?;
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let mut child = Command::new(rclone)
            .args(["serve", "s3", "--addr"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("--auth-key")
            .arg(format!("{ACCESS_KEY},{SECRET_KEY}"))
            .arg("--config")
            .arg("/dev/null")
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("rclone starts");
        wait_for_port(port, &mut child, "rclone serve s3");
        Some(S3Server {
            child,
            _dir: dir,
            endpoint: format!("http://127.0.0.1:{port}"),
        })
    }

    /// The restic repository in `bucket`.
    pub fn repository(&self, bucket: &str) -> String {
        format!("s3:{}/{bucket}", self.endpoint)
    }

    /// Creates an empty bucket (for restore targets) through the S3 API.
    pub async fn create_bucket(&self, bucket: &str) {
        use rusty_s3::S3Action;
        let (bucket, credentials) = self.bucket(bucket);
        let url = bucket
            .create_bucket(&credentials)
            .sign(Duration::from_secs(600));
        let response = reqwest::Client::new()
            .put(url)
            .send()
            .await
            .expect("PUT bucket");
        assert!(
            response.status().is_success(),
            "create bucket: {}",
            response.status()
        );
    }

    fn bucket(&self, bucket: &str) -> (rusty_s3::Bucket, rusty_s3::Credentials) {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let bucket = rusty_s3::Bucket::new(
            self.endpoint.parse().expect("endpoint URL"),
            rusty_s3::UrlStyle::Path,
            bucket.to_string(),
            "us-east-1",
        )
        .expect("bucket");
        (bucket, rusty_s3::Credentials::new(ACCESS_KEY, SECRET_KEY))
    }

    /// The directory the server keeps its buckets in, one subdirectory each.
    pub fn store(&self) -> &Path {
        self._dir.path()
    }

    /// Deletes an object through the S3 API (the server caches its directory listings, so a
    /// file removed behind its back would still be listed).
    pub async fn delete(&self, bucket: &str, key: &str) {
        use rusty_s3::S3Action;
        let (bucket, credentials) = self.bucket(bucket);
        let url = bucket
            .delete_object(Some(&credentials), key)
            .sign(Duration::from_secs(600));
        let response = reqwest::Client::new()
            .delete(url)
            .send()
            .await
            .expect("DELETE object");
        assert!(
            response.status().is_success(),
            "DELETE {key}: {}",
            response.status()
        );
    }

    /// Reads an object.
    pub async fn get(&self, bucket: &str, key: &str) -> Vec<u8> {
        use rusty_s3::S3Action;
        let (bucket, credentials) = self.bucket(bucket);
        let url = bucket
            .get_object(Some(&credentials), key)
            .sign(Duration::from_secs(600));
        let response = reqwest::get(url).await.expect("GET object");
        assert!(
            response.status().is_success(),
            "GET {key}: {}",
            response.status()
        );
        response.bytes().await.expect("object body").to_vec()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A short-lived Pushgateway; stopped when dropped.
pub struct Pushgateway {
    child: Child,
    /// `http://127.0.0.1:<port>`.
    pub url: String,
}

impl Pushgateway {
    /// Starts one, or `None` when it is missing outside CI.
    pub fn start() -> Option<Pushgateway> {
        let binary = tool(
            "prometheus-pushgateway",
            "BAAS_TEST_PUSHGATEWAY",
            Some(PathBuf::from("/usr/bin/prometheus-pushgateway")),
        )?;
        let port = free_port();
        let mut child = Command::new(binary)
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("pushgateway starts");
        wait_for_port(port, &mut child, "prometheus-pushgateway");
        Some(Pushgateway {
            child,
            url: format!("http://127.0.0.1:{port}"),
        })
    }

    /// Its `/metrics` page.
    pub fn metrics(&self) -> String {
        let mut stream = TcpStream::connect(self.url.trim_start_matches("http://"))
            .expect("pushgateway reachable");
        use std::io::{Read, Write};
        write!(
            stream,
            "GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        )
        .expect("request sent");
        let mut body = String::new();
        stream.read_to_string(&mut body).expect("response read");
        body
    }
}

impl Drop for Pushgateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What one agent run left.
#[derive(Debug)]
pub struct Outcome {
    /// Process exit code.
    pub code: Option<i32>,
    /// The report it wrote.
    pub report: RunReport,
    /// Its log.
    pub stderr: String,
    /// Peak resident memory of the agent process in KiB (VmHWM, sampled until it exits).
    pub peak_rss_kib: u64,
    /// Peak of its heap and stacks in KiB (RssAnon, sampled every 20 ms): the part that would
    /// grow with the data, without the pages of the mapped binary.
    pub peak_anon_kib: u64,
}

impl Outcome {
    /// Asserts that the run Succeeded, showing its report and log when it did not.
    pub fn assert_succeeded(&self) {
        assert_eq!(
            self.report.state,
            Some(RunState::Succeeded),
            "{:?}\n{}",
            self.report,
            self.stderr
        );
    }
}

/// A configured `baas agent` invocation.
pub struct Agent {
    envs: Vec<(String, String)>,
    data: Option<PathBuf>,
    hostname: Option<String>,
    nobody: bool,
    work: tempfile::TempDir,
}

impl Agent {
    /// An agent for `repository` in namespace `ns`, with the test credentials.
    pub fn new(repository: &str, ns: &str) -> Agent {
        let work = tempfile::tempdir().expect("temp dir");
        let cache = work.path().join("cache");
        std::fs::create_dir_all(&cache).expect("cache dir");
        make_world_writable(work.path());
        make_world_writable(&cache);
        let envs = [
            ("RESTIC_REPOSITORY", repository),
            ("RESTIC_PASSWORD", PASSWORD),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
            ("BAAS_NAMESPACE", ns),
            ("BAAS_RUN_NAME", "test-run"),
            ("BAAS_EXEC_MODE", "local"),
            ("BAAS_LOG", "info"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .chain([
            ("RESTIC_CACHE_DIR".to_string(), cache.display().to_string()),
            (
                "BAAS_DATA_DIR".to_string(),
                work.path().join("no-volumes").display().to_string(),
            ),
        ])
        .collect();
        Agent {
            envs,
            data: None,
            hostname: None,
            nobody: false,
            work,
        }
    }

    /// Sets (or with `None` removes) an environment variable.
    pub fn env(mut self, key: &str, value: Option<&str>) -> Agent {
        self.envs.retain(|(k, _)| k != key);
        if let Some(value) = value {
            self.envs.push((key.into(), value.into()));
        }
        self
    }

    /// Runs backup commands as `(pod, container, command)`: the Job's `BAAS_BACKUP_PODS`
    /// names pod and container, and the command stands in the annotation of a pod in the
    /// pod list that local exec mode reads in place of the cluster's pods.
    pub fn backup_commands(self, commands: &[(&str, &str, &str)]) -> Agent {
        let targets: Vec<_> = commands
            .iter()
            .map(|(pod, container, _)| serde_json::json!({"pod": pod, "container": container}))
            .collect();
        let pods: Vec<_> = commands
            .iter()
            .map(|(pod, container, command)| {
                serde_json::json!({
                    "metadata": {
                        "name": pod,
                        "annotations": {"appuio.ch/backupcommand": command}
                    },
                    "spec": {"containers": [{"name": container}]}
                })
            })
            .collect();
        self.backup_pods(
            &serde_json::Value::Array(targets).to_string(),
            &serde_json::json!({"items": pods}),
        )
    }

    /// Sets `BAAS_BACKUP_PODS` to `targets` and makes `pods` the pod list local exec mode
    /// reads (a `kubectl get pods -o json` document).
    pub fn backup_pods(self, targets: &str, pods: &serde_json::Value) -> Agent {
        let file = self.work.path().join("pods.json");
        std::fs::write(&file, pods.to_string()).expect("write the pod list");
        let file = file.display().to_string();
        self.env("BAAS_BACKUP_PODS", Some(targets))
            .env("BAAS_LOCAL_PODS", Some(&file))
    }

    /// Backs up the subdirectories of `dir` as `/data/<name>`.
    pub fn volumes(mut self, dir: &Path) -> Agent {
        self.data = Some(dir.to_path_buf());
        self.envs.retain(|(k, _)| k != "BAAS_DATA_DIR");
        self.envs.push(("BAAS_DATA_DIR".into(), "/data".into()));
        self
    }

    /// Runs the agent under host name `name` (in a private UTS namespace), as a pod's.
    pub fn hostname(mut self, name: &str) -> Agent {
        self.hostname = Some(name.into());
        self
    }

    /// Runs the agent as user and group 65534 (nobody), as an unprivileged Job would.
    pub fn unprivileged(mut self) -> Agent {
        self.nobody = true;
        self
    }

    /// Runs `baas agent <args>`.
    pub fn run(&self, args: &[&str]) -> Outcome {
        let report_file = self.work.path().join("report.json");
        let _ = std::fs::remove_file(&report_file);
        let mut argv: Vec<String> = Vec::new();
        if let Some(hostname) = &self.hostname {
            argv.extend(
                [
                    "unshare",
                    "--uts",
                    "sh",
                    "-c",
                    r#"hostname "$0" && exec "$@""#,
                ]
                .map(String::from),
            );
            argv.push(hostname.clone());
        }
        if let Some(data) = &self.data {
            argv.extend(
                [
                    "unshare",
                    "--mount",
                    "--propagation",
                    "private",
                    "sh",
                    "-c",
                    r#"mount --bind "$0" /data && exec "$@""#,
                ]
                .map(String::from),
            );
            argv.push(data.display().to_string());
        }
        if self.nobody {
            argv.extend(
                [
                    "setpriv",
                    "--reuid=65534",
                    "--regid=65534",
                    "--clear-groups",
                ]
                .map(String::from),
            );
        }
        argv.push(env!("CARGO_BIN_EXE_baas").into());
        argv.push("agent".into());
        argv.extend(args.iter().map(|a| a.to_string()));
        // The pinned restic, unless the test brings its own (a fake); its directory first on
        // PATH too, so a `restic` that a backup command runs is the same one.
        let mut path = std::env::var_os("PATH").unwrap_or_default();
        let mut restic = Vec::new();
        if !self.envs.iter().any(|(k, _)| k == "BAAS_RESTIC") {
            let binary = restic_binary().expect("restic is available (checked by S3Server::start)");
            if let Some(dir) = binary.parent() {
                let dirs = std::iter::once(dir.to_path_buf()).chain(std::env::split_paths(&path));
                path = std::env::join_paths(dirs.collect::<Vec<_>>()).expect("PATH joins");
            }
            restic.push(("BAAS_RESTIC", binary));
        }
        let mut child = Command::new(&argv[0])
            .args(&argv[1..])
            .env_clear()
            .env("PATH", path)
            .envs(restic)
            .env("HOME", self.work.path())
            .envs(self.envs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("BAAS_REPORT_FILE", &report_file)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the agent starts");
        let pid = child.id();
        let stderr = child.stderr.take().expect("stderr piped");
        let log = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = std::io::Read::read_to_string(&mut { stderr }, &mut text);
            text
        });
        let (mut peak, mut peak_anon) = (0, 0);
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait for the agent") {
                break status;
            }
            if let Some(hwm) = status_kib(pid, "VmHWM:") {
                peak = peak.max(hwm);
            }
            if let Some(anon) = status_kib(pid, "RssAnon:") {
                peak_anon = peak_anon.max(anon);
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let stderr = log.join().unwrap_or_default();
        let report_text = std::fs::read_to_string(&report_file).unwrap_or_default();
        let report = RunReport::from_termination_message(&report_text)
            .unwrap_or_else(|| panic!("no report (got {report_text:?}); log:\n{stderr}"));
        Outcome {
            code: status.code(),
            report,
            stderr,
            peak_rss_kib: peak,
            peak_anon_kib: peak_anon,
        }
    }
}

/// A `kB` figure of `/proc/<pid>/status`.
fn status_kib(pid: u32, field: &str) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

fn make_world_writable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o777)).expect("chmod test dir");
}

/// Runs restic directly on `repository` with the test credentials.
pub fn restic(repository: &str, args: &[&str]) -> std::process::Output {
    restic_with_stdin(repository, args, None)
}

/// Runs restic with `stdin` as its input.
pub fn restic_with_stdin(
    repository: &str,
    args: &[&str],
    stdin: Option<&[u8]>,
) -> std::process::Output {
    use std::io::Write;
    let cache = std::env::temp_dir().join("baas-test-restic-cache");
    let mut child =
        Command::new(restic_binary().expect("restic is available (checked by S3Server::start)"))
            .arg("--repo")
            .arg(repository)
            .args(args)
            .env("RESTIC_PASSWORD", PASSWORD)
            .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
            .env("RESTIC_CACHE_DIR", cache)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("restic starts");
    if let Some(data) = stdin {
        let mut input = child.stdin.take().expect("stdin piped");
        input.write_all(data).expect("restic reads stdin");
    }
    let output = child.wait_with_output().expect("restic runs");
    assert!(
        output.status.success(),
        "restic {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Snapshots of the repository as JSON values.
pub fn snapshots(repository: &str) -> Vec<serde_json::Value> {
    let out = restic(repository, &["snapshots", "--json"]);
    serde_json::from_slice::<Option<Vec<serde_json::Value>>>(&out.stdout)
        .expect("snapshots JSON")
        .unwrap_or_default()
}
