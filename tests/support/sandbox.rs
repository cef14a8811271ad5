//! A sandbox per test: `scripts/sandbox-host` starts moto_server and a private sshd on free
//! loopback ports (the same script the README's quick start uses); a delaying TCP proxy can sit
//! in front of the emulator so every AWS call takes measurable time (to interrupt a bake inside
//! a given phase). Everything is stopped on drop.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::fixtures::{repo_root, shipped_copy, Project};

pub const REGION: &str = "us-east-1";
pub const BUILD_USER: &str = "bakery-build";
/// The sandbox target's bucket (scripts/sandbox-host creates it).
pub const BUCKET: &str = "bakery-sandbox";

/// Sends `sig` (`INT`, `TERM`, `KILL`, ...) to a process.
pub fn signal(pid: u32, sig: &str) {
    Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .expect("kill");
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

fn setup_hint() -> String {
    "the sandbox needs root, openssh-server and moto: run `bash scripts/install-sandbox-deps` (scripts/test does) as root".to_string()
}

/// One state change the emulator modelled.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Transition {
    /// Seconds since the epoch.
    pub t: f64,
    pub id: String,
    pub region: String,
    /// `running`, `stopped`, `available` or `Online`.
    pub state: String,
}

/// One call the emulator received.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct EmulatorCall {
    /// Seconds since the epoch, when the call arrived.
    pub t: f64,
    /// When it was answered (the same as `t` for a fault answered at once).
    #[serde(default)]
    pub done: f64,
    pub service: String,
    pub action: String,
    /// Instance or image ids named as `InstanceId.N` / `ImageId.N`.
    pub ids: Vec<String>,
    /// Ids named in DescribeInstances' `instance-id` or DescribeImages' `image-id` filter (how
    /// bakery's shared pollers ask).
    pub filter_ids: Vec<String>,
    /// The error code the emulator injected instead of (or, `LostResponse`, after) answering.
    #[serde(default)]
    pub fault: Option<String>,
    /// The account the call was made in (a consumer's, through its role) and its region.
    #[serde(default)]
    pub account: Option<String>,
    #[serde(default)]
    pub region: Option<String>,
}

pub struct Sandbox {
    host: Child,
    pub moto_port: u16,
    pub ssh_port: u16,
    /// Where bakery sends AWS calls (the emulator, or the delaying proxy in front of it).
    pub endpoint: String,
    pub project: Project,
    state: tempfile::TempDir,
    proxy_stop: Option<Arc<AtomicBool>>,
}

impl Sandbox {
    /// A sandbox with the shipped catalog and a `sandbox` target pointing at it.
    pub fn start() -> Sandbox {
        Self::start_with(None)
    }

    /// Same, with every request to the emulator delayed by `delay`.
    pub fn start_with(delay: Option<Duration>) -> Sandbox {
        Self::start_opts(delay, "")
    }

    /// With injected emulator faults: `"CopyImage:eu-west-1,..."` (each fails once).
    pub fn start_opts(delay: Option<Duration>, faults: &str) -> Sandbox {
        Self::start_env(delay, &[("BAKERY_EMULATOR_FAULTS", faults)])
    }

    /// With these variables for the emulator (`BAKERY_EMULATOR_FAULTS`,
    /// `BAKERY_EMULATOR_FAULT_RATE`, `BAKERY_EMULATOR_FAULT_SEED`; see scripts/emulator.py).
    pub fn start_env(delay: Option<Duration>, env: &[(&str, &str)]) -> Sandbox {
        let root = repo_root();
        let venv = std::env::var("BAKERY_SANDBOX_VENV")
            .map(PathBuf::from)
            .unwrap_or_else(|_| root.join(".sandbox/venv"));
        assert!(
            venv.join("bin/moto_server").exists(),
            "no moto_server in {}: {}",
            venv.display(),
            setup_hint()
        );
        assert!(
            Path::new("/usr/sbin/sshd").exists(),
            "no /usr/sbin/sshd: {}",
            setup_hint()
        );
        let uid = Command::new("id").arg("-u").output().expect("id");
        assert_eq!(
            String::from_utf8_lossy(&uid.stdout).trim(),
            "0",
            "{}",
            setup_hint()
        );
        let state = tempfile::tempdir().expect("tempdir");
        let (moto_port, ssh_port) = (free_port(), free_port());
        let mut host = Command::new("bash")
            .arg(root.join("scripts/sandbox-host"))
            .arg(state.path())
            .arg(moto_port.to_string())
            .arg(ssh_port.to_string())
            .arg(BUILD_USER)
            .arg(REGION)
            .env("BAKERY_SANDBOX_VENV", &venv)
            .env_remove("BAKERY_EMULATOR_FAULTS")
            .env_remove("BAKERY_EMULATOR_FAULT_RATE")
            .env_remove("BAKERY_EMULATOR_FAULT_SEED")
            .env_remove("BAKERY_EMULATOR_DELAYS")
            .env_remove("BAKERY_EMULATOR_SLOW")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start scripts/sandbox-host");
        // From here on a panic must not orphan the emulator and sshd.
        struct Guard(Option<Child>);
        impl Drop for Guard {
            fn drop(&mut self) {
                if let Some(c) = &mut self.0 {
                    let _ = Command::new("kill")
                        .arg("-TERM")
                        .arg(c.id().to_string())
                        .status();
                    let _ = c.wait();
                }
            }
        }
        let mut guard = Guard(None);
        let mut out = BufReader::new(host.stdout.take().expect("stdout"));
        let mut line = String::new();
        out.read_line(&mut line).expect("read");
        if line.trim() != "ready" {
            let mut err = String::new();
            if let Some(mut e) = host.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            let _ = host.kill();
            panic!("sandbox did not start: {line}{err}\n{}", setup_hint());
        }
        guard.0 = Some(host);
        let (endpoint, proxy_stop) = match delay {
            None => (format!("http://127.0.0.1:{moto_port}"), None),
            Some(d) => {
                let (port, stop) = delaying_proxy(moto_port, d);
                (format!("http://127.0.0.1:{port}"), Some(stop))
            }
        };
        let project = shipped_copy();
        project.write(
            "bakery.toml",
            &format!(
                "[targets.sandbox]\nregions = [\"{REGION}\"]\nendpoint_url = \"{endpoint}\"\nssh_host = \"127.0.0.1\"\nssh_port = {ssh_port}\nssh_user = \"{BUILD_USER}\"\nssh_cidr = \"127.0.0.1/32\"\ninstance_profile = \"bakery-sandbox\"\ns3_bucket = \"{BUCKET}\"\n"
            ),
        );
        let host = guard.0.take().expect("host");
        Sandbox {
            host,
            moto_port,
            ssh_port,
            endpoint,
            project,
            state,
            proxy_stop,
        }
    }

    /// A `bakery` command in this sandbox's project, with emulator credentials.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_bakery"));
        c.args(args)
            .arg("--project")
            .arg(self.project.path())
            .env("AWS_ACCESS_KEY_ID", "sandbox")
            .env("AWS_SECRET_ACCESS_KEY", "sandbox")
            .env_remove("AWS_PROFILE")
            .env_remove("AWS_ENDPOINT_URL")
            .env_remove("TEAMCITY_TOKEN");
        c
    }

    pub fn bakery(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run bakery")
    }

    /// SDK configuration for the emulator itself (not the proxy). Ten attempts per call: the
    /// harness's own reads must see through a test's injected fault rate.
    pub async fn sdk_config(&self) -> aws_config::SdkConfig {
        aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new(REGION))
            .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(10))
            .endpoint_url(format!("http://127.0.0.1:{}", self.moto_port))
            .credentials_provider(aws_sdk_ec2::config::Credentials::new(
                "sandbox", "sandbox", None, None, "test",
            ))
            .http_client(
                aws_smithy_http_client::Builder::new()
                    .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                        aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
                    ))
                    .build_https(),
            )
            .load()
            .await
    }

    /// EC2 and SSM clients against the emulator in another region.
    pub async fn clients_in(&self, region: &str) -> (aws_sdk_ec2::Client, aws_sdk_ssm::Client) {
        let conf = self
            .sdk_config()
            .await
            .into_builder()
            .region(aws_config::Region::new(region.to_string()))
            .build();
        (
            aws_sdk_ec2::Client::new(&conf),
            aws_sdk_ssm::Client::new(&conf),
        )
    }

    /// Uses these regions in the sandbox target (the first is the build region).
    pub fn set_regions(&self, regions: &[&str]) {
        let path = self.project.path().join("bakery.toml");
        let toml = std::fs::read_to_string(&path).expect("bakery.toml");
        let list = regions
            .iter()
            .map(|r| format!("\"{r}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let toml = toml.replace(
            &format!("regions = [\"{REGION}\"]"),
            &format!("regions = [{list}]"),
        );
        std::fs::write(path, toml).expect("write");
    }

    /// Gives the `sandbox` target a customer managed KMS key in each region the sandbox uses
    /// (shared images need one), whose key policy lets `consumers` use it (their statement is
    /// left out when empty, as a key made for the account alone has it).
    pub fn set_kms_key(&self, consumers: &[&str]) {
        self.set_kms_key_with(consumers, Vec::new());
    }

    /// `set_kms_key`, with more statements in the key policy.
    pub fn set_kms_key_with(&self, consumers: &[&str], more: Vec<serde_json::Value>) {
        let mut statements = vec![serde_json::json!({
            "Sid": "Enable IAM User Permissions", "Effect": "Allow",
            "Principal": {"AWS": "arn:aws:iam::123456789012:root"}, "Action": "kms:*", "Resource": "*"
        })];
        statements.extend(more);
        if !consumers.is_empty() {
            let principals: Vec<String> = consumers
                .iter()
                .map(|a| format!("arn:aws:iam::{a}:root"))
                .collect();
            statements.push(serde_json::json!({
                "Sid": "consumers", "Effect": "Allow", "Principal": {"AWS": principals},
                "Action": ["kms:Decrypt", "kms:DescribeKey", "kms:CreateGrant", "kms:ReEncrypt*", "kms:GenerateDataKey*"],
                "Resource": "*"
            }));
        }
        let policy =
            serde_json::json!({ "Version": "2012-10-17", "Statement": statements }).to_string();
        let keys: Vec<(String, String)> = super::rt().block_on(async {
            let mut out = Vec::new();
            for region in ["us-east-1", "eu-west-1"] {
                let conf = self
                    .sdk_config()
                    .await
                    .into_builder()
                    .region(aws_config::Region::new(region))
                    .build();
                let kms = aws_sdk_kms::Client::new(&conf);
                let key = kms
                    .create_key()
                    .policy(&policy)
                    .description("bakery sandbox: shared images")
                    .send()
                    .await
                    .expect("CreateKey");
                let arn = key.key_metadata().and_then(|m| m.arn()).expect("arn");
                out.push((region.to_string(), arn.to_string()));
            }
            out
        });
        let path = self.project.path().join("bakery.toml");
        let toml = std::fs::read_to_string(&path).expect("bakery.toml");
        let list: Vec<String> = keys
            .iter()
            .map(|(r, k)| format!("\"{r}\" = \"{k}\""))
            .collect();
        let toml = match toml.find("\nkms_keys = ") {
            // A second call replaces the keys.
            Some(i) => {
                let end = toml[i + 1..].find('\n').map_or(toml.len(), |e| i + 1 + e);
                format!(
                    "{}\nkms_keys = {{ {} }}{}",
                    &toml[..i],
                    list.join(", "),
                    &toml[end..]
                )
            }
            None => toml.replace(
                "[targets.sandbox]\n",
                &format!("[targets.sandbox]\nkms_keys = {{ {} }}\n", list.join(", ")),
            ),
        };
        std::fs::write(path, toml).expect("write");
    }

    /// SDK configuration for another account of the emulator, in `region`: the harness enters
    /// it as AWS Organizations' management account does, through OrganizationAccountAccessRole.
    pub async fn account_config(&self, account: &str, region: &str) -> aws_config::SdkConfig {
        use aws_credential_types::provider::ProvideCredentials;
        let base = self
            .sdk_config()
            .await
            .into_builder()
            .region(aws_config::Region::new(region.to_string()))
            .build();
        let creds = aws_config::sts::AssumeRoleProvider::builder(format!(
            "arn:aws:iam::{account}:role/OrganizationAccountAccessRole"
        ))
        .session_name("harness")
        .configure(&base)
        .build()
        .await
        .provide_credentials()
        .await
        .expect("assume OrganizationAccountAccessRole");
        base.into_builder()
            .credentials_provider(
                aws_credential_types::provider::SharedCredentialsProvider::new(creds),
            )
            .build()
    }

    /// Environment for a `bakery` command run with `account`'s credentials (a team's CI).
    pub fn account_env(&self, account: &str) -> Vec<(String, String)> {
        use aws_credential_types::provider::ProvideCredentials;
        super::rt().block_on(async {
            let conf = self.account_config(account, REGION).await;
            let c = conf
                .credentials_provider()
                .expect("credentials")
                .provide_credentials()
                .await
                .expect("credentials");
            vec![
                ("AWS_ACCESS_KEY_ID".into(), c.access_key_id().to_string()),
                (
                    "AWS_SECRET_ACCESS_KEY".into(),
                    c.secret_access_key().to_string(),
                ),
                (
                    "AWS_SESSION_TOKEN".into(),
                    c.session_token().unwrap_or_default().to_string(),
                ),
            ]
        })
    }

    /// Creates the role bakery assumes in a consumer account: trusted by the sandbox's own
    /// account (123456789012), with `external_id` required when given.
    pub fn create_consumer_role(&self, account: &str, name: &str, external_id: Option<&str>) {
        let mut statement = serde_json::json!({
            "Effect": "Allow", "Action": "sts:AssumeRole",
            "Principal": {"AWS": "arn:aws:iam::123456789012:root"},
        });
        if let Some(x) = external_id {
            statement["Condition"] = serde_json::json!({"StringEquals": {"sts:ExternalId": x}});
        }
        let policy =
            serde_json::json!({"Version": "2012-10-17", "Statement": [statement]}).to_string();
        super::rt().block_on(async {
            let conf = self.account_config(account, REGION).await;
            aws_sdk_iam::Client::new(&conf)
                .create_role()
                .role_name(name)
                .assume_role_policy_document(policy)
                .send()
                .await
                .expect("CreateRole");
        });
    }

    /// sandbox-demo's image file renamed to `name`, with `inserted` (a `[[recipe]]` table, or
    /// checks) placed before its first `[[check]]`: after its own recipes, so the variant bakes
    /// what the demo does and then that. The caller writes it (to `images/<name>.toml`).
    pub fn demo_variant(&self, name: &str, inserted: &str) -> String {
        let demo = std::fs::read_to_string(self.project.path().join("images/sandbox-demo.toml"))
            .expect("images/sandbox-demo.toml");
        assert!(demo.contains("[[check]]"), "sandbox-demo has checks");
        demo.replace("name = \"sandbox-demo\"", &format!("name = \"{name}\""))
            .replacen("[[check]]", &format!("{inserted}[[check]]"), 1)
    }

    /// Adds consumers to the `sandbox` target: (account, role name, external id).
    pub fn add_consumers(&self, consumers: &[(&str, &str, Option<&str>)]) {
        let path = self.project.path().join("bakery.toml");
        let mut toml = std::fs::read_to_string(&path).expect("bakery.toml");
        for (account, role, external) in consumers {
            toml.push_str(&format!(
                "\n[[targets.sandbox.consumers]]\naccount = \"{account}\"\nrole_arn = \"arn:aws:iam::{account}:role/{role}\"\n"
            ));
            if let Some(x) = external {
                toml.push_str(&format!("external_id = \"{x}\"\n"));
            }
        }
        std::fs::write(path, toml).expect("write");
    }

    /// EC2 and SSM clients against the emulator.
    pub async fn clients(&self) -> (aws_sdk_ec2::Client, aws_sdk_ssm::Client) {
        let conf = self.sdk_config().await;
        (
            aws_sdk_ec2::Client::new(&conf),
            aws_sdk_ssm::Client::new(&conf),
        )
    }

    /// Runs `bakery bake <image> --target sandbox --log-format json --force-after 0s`, showing
    /// every event to `interrupts`, which answers how many SIGINTs to send right then (100 ms
    /// apart; with no grace period a second one skips the cleanup). Returns the exit status (the
    /// bake must exit within two minutes) and everything it printed on stderr.
    pub fn bake_interrupted(
        &self,
        image: &str,
        mut interrupts: impl FnMut(&serde_json::Value) -> usize,
    ) -> (std::process::ExitStatus, String) {
        self.bake_signalled(image, &["--force-after", "0s"], |v| {
            vec!["INT"; interrupts(v)]
        })
    }

    /// Runs `bakery bake <image> --target sandbox --log-format json ARGS` with no terminal on
    /// stdin (as under CI), showing every event to `signals`, which answers which signals to send
    /// right then (`"INT"`, `"TERM"`, `"HUP"`, `"KILL"`, `"STOP"`, `"CONT"`, 100 ms apart).
    /// Returns the exit status (within two minutes) and everything printed on stderr.
    pub fn bake_signalled(
        &self,
        image: &str,
        args: &[&str],
        mut signals: impl FnMut(&serde_json::Value) -> Vec<&'static str>,
    ) -> (std::process::ExitStatus, String) {
        let mut all = vec!["bake", image, "--target", "sandbox", "--log-format", "json"];
        all.extend_from_slice(args);
        let mut child = self
            .command(&all)
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn bakery");
        let stderr = child.stderr.take().expect("stderr");
        let mut seen = Vec::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
            seen.push(line);
            for (i, sig) in signals(&v).into_iter().enumerate() {
                if i > 0 {
                    std::thread::sleep(Duration::from_millis(100));
                }
                signal(child.id(), sig);
            }
        }
        let end = std::time::Instant::now() + Duration::from_secs(120);
        let status = loop {
            if let Some(s) = child.try_wait().expect("try_wait") {
                break s;
            }
            if std::time::Instant::now() > end {
                let _ = child.kill();
                panic!("bakery did not exit within 120s:\n{}", seen.join("\n"));
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        (status, seen.join("\n"))
    }

    /// Every call the emulator has received so far, in order (from the emulator's action log).
    pub fn actions(&self) -> Vec<EmulatorCall> {
        // The emulator writes a line once a call is answered: in the order they arrived here.
        let mut calls: Vec<EmulatorCall> =
            std::fs::read_to_string(self.state.path().join("actions.log"))
                .unwrap_or_default()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("action log {l}: {e}")))
                .collect();
        calls.sort_by(|a, b| a.t.total_cmp(&b.t));
        calls
    }

    /// The state changes the emulator modelled so far (with `BAKERY_EMULATOR_DELAYS`), in order.
    pub fn transitions(&self) -> Vec<Transition> {
        std::fs::read_to_string(self.state.path().join("transitions.log"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("transition log {l}: {e}")))
            .collect()
    }

    /// Requests the emulator has answered so far (one log line each).
    pub fn requests(&self) -> usize {
        std::fs::read_to_string(self.state.path().join("moto.log"))
            .map(|s| {
                s.lines()
                    .filter(|l| l.contains("\"POST ") || l.contains("\"GET "))
                    .count()
            })
            .unwrap_or(0)
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if let Some(stop) = &self.proxy_stop {
            stop.store(true, Ordering::SeqCst);
        }
        // SIGTERM: the script's trap stops moto and sshd and removes its files.
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.host.id().to_string())
            .status();
        for _ in 0..50 {
            if let Ok(Some(_)) = self.host.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.host.kill();
        let _ = self.host.wait();
    }
}

/// A TCP proxy on a free port that forwards to `upstream` and holds each chunk from the client
/// for `delay` (each HTTP request, since the SDK sends a request in one write).
fn delaying_proxy(upstream: u16, delay: Duration) -> (u16, Arc<AtomicBool>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
    let port = listener.local_addr().expect("addr").port();
    listener.set_nonblocking(true).expect("nonblocking");
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    std::thread::spawn(move || {
        while !stop2.load(Ordering::SeqCst) {
            match listener.accept() {
                Ok((client, _)) => {
                    let _ = client.set_nonblocking(false);
                    let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                        continue;
                    };
                    let (c2, s2) = (
                        client.try_clone().expect("clone"),
                        server.try_clone().expect("clone"),
                    );
                    std::thread::spawn(move || pump(client, server, Some(delay)));
                    std::thread::spawn(move || pump(s2, c2, None));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    });
    (port, stop)
}

fn pump(mut from: TcpStream, mut to: TcpStream, delay: Option<Duration>) {
    let mut buf = [0u8; 64 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => {
                let _ = to.shutdown(std::net::Shutdown::Write);
                return;
            }
            Ok(n) => {
                if let Some(d) = delay {
                    std::thread::sleep(d);
                }
                if to.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
        }
    }
}

/// A one-file HTTP server on a free loopback port (what a `download` step fetches), stopped on
/// drop.
pub struct FileServer {
    pub url: String,
    stop: Arc<AtomicBool>,
}

impl FileServer {
    pub fn start(body: &'static [u8]) -> FileServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}/file.bin", listener.local_addr().expect("addr"));
        listener.set_nonblocking(true).expect("nonblocking");
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        std::thread::spawn(move || {
            while !stop2.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((mut s, _)) => {
                        let _ = s.set_nonblocking(false);
                        let mut buf = [0u8; 4096];
                        let _ = s.read(&mut buf);
                        let head = format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                            body.len()
                        );
                        let _ = s.write_all(head.as_bytes());
                        let _ = s.write_all(body);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        FileServer { url, stop }
    }
}

impl Drop for FileServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// The token the input server's version endpoint wants (`Authorization: Bearer …`).
pub const TEAMCITY_TOKEN: &str = "sandbox-teamcity-token-5c1e";

/// What a live input reads in tests: an HTTP server on a free loopback port whose body a test
/// can change, answering with an ETag and `304 Not Modified` to a matching `If-None-Match`, and
/// counting requests and bodies sent. Like a TeamCity server it also answers
/// `/app/rest/server/version` with a version a test can change, to a request that carries
/// `TEAMCITY_TOKEN` as its bearer token (401 otherwise). Stopped on drop (or by `stop`, to be
/// unreachable).
pub struct InputServer {
    pub url: String,
    body: Arc<std::sync::Mutex<Vec<u8>>>,
    version: Arc<std::sync::Mutex<String>>,
    requests: Arc<std::sync::atomic::AtomicUsize>,
    bodies: Arc<std::sync::atomic::AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl InputServer {
    pub fn start(body: &[u8]) -> InputServer {
        use std::sync::atomic::AtomicUsize;
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!(
            "http://{}/update/buildAgentFull.zip",
            listener.local_addr().expect("addr")
        );
        listener.set_nonblocking(true).expect("nonblocking");
        let body = Arc::new(std::sync::Mutex::new(body.to_vec()));
        let (requests, bodies) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let stop = Arc::new(AtomicBool::new(false));
        let version = Arc::new(std::sync::Mutex::new("2025.07 (build 197242)".to_string()));
        let (b, r, n, st) = (body.clone(), requests.clone(), bodies.clone(), stop.clone());
        let ver = version.clone();
        let thread = std::thread::spawn(move || {
            while !st.load(Ordering::SeqCst) {
                let Ok((mut s, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                let _ = s.set_nonblocking(false);
                let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(k) => head.extend_from_slice(&buf[..k]),
                    }
                }
                let head = String::from_utf8_lossy(&head).to_string();
                if head.starts_with("GET /app/rest/server/version ") {
                    let authorized = head.lines().any(|l| {
                        l.split_once(':').is_some_and(|(k, v)| {
                            k.eq_ignore_ascii_case("authorization")
                                && v.trim() == format!("Bearer {TEAMCITY_TOKEN}")
                        })
                    });
                    let (status, text) = if authorized {
                        ("200 OK", ver.lock().expect("version").clone())
                    } else {
                        ("401 Unauthorized", "Authentication required".to_string())
                    };
                    let _ = s.write_all(
                        format!(
                            "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
                            text.len()
                        )
                        .as_bytes(),
                    );
                    continue;
                }
                r.fetch_add(1, Ordering::SeqCst);
                let head = head.to_ascii_lowercase();
                let data = b.lock().expect("body").clone();
                use sha2::Digest;
                let etag = format!("\"{}\"", &hex::encode(sha2::Sha256::digest(&data))[..16]);
                let matches = head.lines().any(|l| {
                    l.strip_prefix("if-none-match:")
                        .is_some_and(|v| v.trim() == etag)
                });
                if matches {
                    let _ = s.write_all(
                        format!("HTTP/1.1 304 Not Modified\r\nETag: {etag}\r\nConnection: close\r\n\r\n")
                            .as_bytes(),
                    );
                } else {
                    n.fetch_add(1, Ordering::SeqCst);
                    let _ = s.write_all(
                        format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nETag: {etag}\r\nConnection: close\r\n\r\n",
                            data.len()
                        )
                        .as_bytes(),
                    );
                    let _ = s.write_all(&data);
                }
            }
        });
        InputServer {
            url,
            body,
            version,
            requests,
            bodies,
            stop,
            thread: Some(thread),
        }
    }

    /// What it serves from now on.
    pub fn set_body(&self, body: &[u8]) {
        *self.body.lock().expect("body") = body.to_vec();
    }

    /// The version `/app/rest/server/version` reports from now on.
    pub fn set_version(&self, version: &str) {
        *self.version.lock().expect("version") = version.to_string();
    }

    /// The server's root URL (what an image's `server_url` names).
    pub fn root(&self) -> &str {
        self.url.trim_end_matches("/update/buildAgentFull.zip")
    }

    /// Requests for the body answered so far (304s included).
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    /// Bodies sent so far (200s).
    pub fn bodies_sent(&self) -> usize {
        self.bodies.load(Ordering::SeqCst)
    }

    /// Stops listening: the URL is unreachable from now on.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for InputServer {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Sandbox {
    /// Everything in the emulator (in `region`) a bake could have left behind: instances not
    /// terminated, key pairs, security groups but the default, snapshots no image uses (tagged
    /// or not), AMIs never published, parameters naming an AMI that is not a published version.
    pub fn leftovers_in(&self, region: &str) -> Vec<String> {
        let sb = self;
        tokio::runtime::Runtime::new()
            .expect("runtime")
            .block_on(async {
                let (ec2, ssm) = sb.clients_in(region).await;
                let mut out = Vec::new();
                let inst = ec2
                    .describe_instances()
                    .send()
                    .await
                    .expect("DescribeInstances");
                for i in inst.reservations().iter().flat_map(|r| r.instances()) {
                    let state = i
                        .state()
                        .and_then(|s| s.name())
                        .map(|n| n.as_str().to_string())
                        .unwrap_or_default();
                    if state != "terminated" {
                        out.push(format!(
                            "instance {} {state}",
                            i.instance_id().unwrap_or_default()
                        ));
                    }
                }
                for k in ec2
                    .describe_key_pairs()
                    .send()
                    .await
                    .expect("DescribeKeyPairs")
                    .key_pairs()
                {
                    out.push(format!("key pair {}", k.key_name().unwrap_or_default()));
                }
                for g in ec2
                    .describe_security_groups()
                    .send()
                    .await
                    .expect("DescribeSecurityGroups")
                    .security_groups()
                {
                    if g.group_name() != Some("default") {
                        out.push(format!(
                            "security group {}",
                            g.group_id().unwrap_or_default()
                        ));
                    }
                }
                // Snapshots of this account that no registered image uses (the emulator's own
                // public AMIs use the snapshots it seeds).
                let images = ec2
                    .describe_images()
                    .owners("self")
                    .send()
                    .await
                    .expect("DescribeImages");
                let every = ec2.describe_images().send().await.expect("DescribeImages");
                let used: Vec<String> = every
                    .images()
                    .iter()
                    .flat_map(|i| i.block_device_mappings())
                    .filter_map(|m| m.ebs()?.snapshot_id().map(str::to_string))
                    .collect();
                let snaps = ec2
                    .describe_snapshots()
                    .owner_ids("self")
                    .send()
                    .await
                    .expect("DescribeSnapshots");
                // Any snapshot no image uses, tagged or not (the emulator seeds none).
                for s in snaps.snapshots() {
                    let id = s.snapshot_id().unwrap_or_default().to_string();
                    if !used.contains(&id) {
                        out.push(format!("snapshot {id}"));
                    }
                }
                // Images never published (a version is only ever a published AMI).
                for i in images.images() {
                    if !i.tags().iter().any(|t| t.key() == Some("bakery:published")) {
                        out.push(format!(
                            "image {} never published",
                            i.image_id().unwrap_or_default()
                        ));
                    }
                }
                // Parameters under the registry prefix that name an AMI that is not a
                // published version.
                let registered: Vec<String> = images
                    .images()
                    .iter()
                    .filter(|i| i.tags().iter().any(|t| t.key() == Some("bakery:published")))
                    .filter_map(|i| i.image_id().map(str::to_string))
                    .collect();
                let mut params = Vec::new();
                let mut pages = ssm
                    .get_parameters_by_path()
                    .path("/bakery")
                    .recursive(true)
                    .into_paginator()
                    .send();
                while let Some(page) = pages.next().await {
                    params.extend(page.expect("GetParametersByPath").parameters().to_vec());
                }
                // `inputs/<version>` of an image with no published AMI of that version.
                let versions: Vec<(String, String)> = images
                    .images()
                    .iter()
                    .filter(|i| i.tags().iter().any(|t| t.key() == Some("bakery:published")))
                    .map(|i| {
                        let tag = |k: &str| {
                            i.tags()
                                .iter()
                                .find(|t| t.key() == Some(k))
                                .and_then(|t| t.value())
                                .unwrap_or_default()
                                .to_string()
                        };
                        (tag("bakery:image"), tag("bakery:version"))
                    })
                    .collect();
                for p in &params {
                    let name = p.name().unwrap_or_default();
                    let v = p.value().unwrap_or_default();
                    if v.starts_with("ami-") && !registered.iter().any(|r| r == v) {
                        out.push(format!("parameter {name} -> {v}"));
                    }
                    let parts: Vec<&str> = name.split('/').collect();
                    if let [_, _, image, "inputs", version] = parts[..] {
                        if !versions.iter().any(|(i, ver)| i == image && ver == version) {
                            out.push(format!(
                                "parameter {name} of a version that is not published"
                            ));
                        }
                    }
                }
                out
            })
    }

    /// `leftovers_in` for every region of the sandbox target.
    pub fn leftovers(&self) -> Vec<String> {
        let mut out = Vec::new();
        for r in self.regions() {
            out.extend(self.leftovers_in(&r).into_iter().map(|l| {
                if r == REGION {
                    l
                } else {
                    format!("{l} ({r})")
                }
            }));
        }
        out.extend(
            self.leftover_workdirs()
                .into_iter()
                .map(|w| format!("workdir {w}")),
        );
        out.extend(
            self.leftover_objects()
                .into_iter()
                .map(|k| format!("s3 object {k}")),
        );
        out.sort();
        out
    }

    /// Objects in the sandbox bucket.
    pub fn leftover_objects(&self) -> Vec<String> {
        tokio::runtime::Runtime::new()
            .expect("runtime")
            .block_on(async {
                let conf = self.sdk_config().await;
                let s3 = aws_sdk_s3::Client::from_conf(
                    aws_sdk_s3::config::Builder::from(&conf)
                        .force_path_style(true)
                        .build(),
                );
                let out = s3
                    .list_objects_v2()
                    .bucket(BUCKET)
                    .send()
                    .await
                    .expect("ListObjectsV2");
                out.contents()
                    .iter()
                    .filter_map(|o| o.key().map(str::to_string))
                    .collect()
            })
    }

    /// The target's regions, from the sandbox project's bakery.toml.
    pub fn regions(&self) -> Vec<String> {
        let text =
            std::fs::read_to_string(self.project.path().join("bakery.toml")).expect("bakery.toml");
        let t: toml::Table = toml::from_str(&text).expect("toml");
        t["targets"]["sandbox"]["regions"]
            .as_array()
            .expect("regions")
            .iter()
            .filter_map(|r| r.as_str().map(str::to_string))
            .collect()
    }

    /// Writes `images/<name>.toml`: sandbox-demo layered on `parent@^0.1`, version 2.0.
    pub fn add_layered_image(&self, name: &str, parent: &str) {
        let demo = std::fs::read_to_string(self.project.path().join("images/sandbox-demo.toml"))
            .expect("demo");
        let child = demo
            .replace("name = \"sandbox-demo\"", &format!("name = \"{name}\""))
            .replace("version = \"0.1\"", "version = \"2.0\"")
            .replace(
                "ssm_parameter = \"/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64\"",
                &format!("image = \"{parent}@^0.1\""),
            );
        assert!(
            child.contains(&format!("{parent}@^0.1")),
            "sandbox-demo.toml changed shape"
        );
        self.project.write(&format!("images/{name}.toml"), &child);
    }

    /// `images/<prefix>-NN.toml` for NN in 1..=n: copies of sandbox-demo under other names.
    pub fn add_demo_copies(&self, prefix: &str, n: usize) -> Vec<String> {
        let demo = std::fs::read_to_string(self.project.path().join("images/sandbox-demo.toml"))
            .expect("demo");
        (1..=n)
            .map(|i| {
                let name = format!("{prefix}-{i:02}");
                let img = demo.replace("name = \"sandbox-demo\"", &format!("name = \"{name}\""));
                assert_ne!(img, demo, "sandbox-demo.toml changed shape");
                self.project.write(&format!("images/{name}.toml"), &img);
                name
            })
            .collect()
    }

    /// `images/fail-step.toml`: sandbox-demo plus a recipe whose step fails (exit 7).
    pub fn add_failing_step(&self) {
        self.project.write(
            "recipes/fail-step/recipe.toml",
            "platforms = [\"linux\"]\n\n[[step]]\nname = \"fails on purpose\"\nshell = { inline = \"echo about to fail\\nexit 7\" }\n",
        );
        let demo = std::fs::read_to_string(self.project.path().join("images/sandbox-demo.toml"))
            .expect("demo");
        let img = demo
            .replace("name = \"sandbox-demo\"", "name = \"fail-step\"")
            .replace("[[check]]", "[[recipe]]\nuse = \"fail-step\"\n\n[[check]]");
        self.project.write("images/fail-step.toml", &img);
    }

    /// Working directories of this sandbox's bakes still on the build host (this machine).
    pub fn leftover_workdirs(&self) -> Vec<String> {
        let Ok(rd) = std::fs::read_dir(self.project.path().join(".bakery/bakes")) else {
            return Vec::new();
        };
        rd.flatten()
            .filter_map(|e| {
                e.path()
                    .file_stem()
                    .map(|s| s.to_string_lossy().to_string())
            })
            .map(|id| format!("/var/tmp/bakery-{id}"))
            .filter(|p| Path::new(p).exists())
            .collect()
    }
}
