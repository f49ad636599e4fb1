//! Starting the real `sluice broker` binary and talking to it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use bytes::Bytes;
use sluice_wire::frame::{decode_response, encode_request};
use sluice_wire::kafka::messages::{ApiKey, RequestHeader};
use sluice_wire::kafka::protocol::{Decodable, Encodable, StrBytes};
use sluice_wire::ApiVersion;

/// How long the broker may take to start (it recovers every partition first).
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a clean stop may take.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a raw test client waits for any one answer.
pub const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// A broker process on a loopback port and a data directory.
pub struct Broker {
    child: Option<Child>,
    pub addr: String,
    pub data_dir: PathBuf,
    log: PathBuf,
    extra_args: Vec<String>,
    _tmp: Option<tempfile::TempDir>,
    _config_dir: Option<tempfile::TempDir>,
}

impl Broker {
    /// A broker with two shards on a fresh temporary data directory.
    pub fn start() -> Broker {
        Broker::start_with(&[])
    }

    /// A broker with two shards whose settings come from `toml`.
    pub fn start_with_config(toml: &str) -> Broker {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("broker.toml");
        std::fs::write(&path, toml).expect("write config");
        let mut b = Broker::start_with(&["--config", path.to_str().expect("utf-8 path")]);
        b._config_dir = Some(dir);
        b
    }

    pub fn start_with(extra_args: &[&str]) -> Broker {
        let tmp = tempfile::tempdir().expect("temp dir");
        let data_dir = tmp.path().join("data");
        let log = tmp.path().join("broker.log");
        let mut b = Broker {
            child: None,
            addr: "127.0.0.1:0".into(),
            data_dir,
            log,
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            _tmp: Some(tmp),
            _config_dir: None,
        };
        b.launch();
        b
    }

    fn launch(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("broker log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluice"));
        cmd.arg("broker")
            .arg("--listen")
            .arg(&self.addr)
            .arg("--data-dir")
            .arg(&self.data_dir);
        if !self.extra_args.iter().any(|a| a == "--shards") {
            cmd.args(["--shards", "2"]);
        }
        cmd.args(&self.extra_args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log));
        let mut child = cmd.spawn().expect("spawn sluice broker");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            while let Some(Ok(line)) = lines.next() {
                if let Some(addr) = line.strip_prefix("sluice broker listening on ") {
                    let _ = tx.send(addr.to_string());
                }
            }
        });
        match rx.recv_timeout(START_TIMEOUT) {
            Ok(addr) => self.addr = addr,
            Err(_) => {
                let _ = child.kill();
                panic!("broker did not start; log:\n{}", self.log_text());
            }
        }
        self.child = Some(child);
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL: no chance to flush or close anything.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("kill broker");
            child.wait().expect("reap broker");
        }
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = child.id().to_string();
            let status = Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .expect("send SIGTERM");
            assert!(status.success());
            let deadline = std::time::Instant::now() + STOP_TIMEOUT;
            loop {
                if let Some(status) = child.try_wait().expect("wait broker") {
                    assert!(
                        status.success(),
                        "broker exited with {status}; log:\n{}",
                        self.log_text()
                    );
                    return;
                }
                if std::time::Instant::now() > deadline {
                    let _ = child.kill();
                    panic!(
                        "broker did not stop within {STOP_TIMEOUT:?}; log:\n{}",
                        self.log_text()
                    );
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// Starts the broker again on the same data directory and port.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop or kill the broker first");
        self.launch();
    }

    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(c) => c.try_wait().expect("try_wait").is_none(),
            None => false,
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("--- broker log ---\n{}", self.log_text());
        }
    }
}

/// A bare Kafka protocol connection built on the wire crate's codec.
pub struct RawClient {
    stream: TcpStream,
    next_correlation: i32,
}

impl RawClient {
    pub fn connect(addr: &str) -> RawClient {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
        stream.set_write_timeout(Some(IO_TIMEOUT)).expect("timeout");
        RawClient {
            stream,
            next_correlation: 1,
        }
    }

    pub fn send_bytes(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Sends a request and returns the raw response frame (without its size).
    pub fn request_raw<R: Encodable>(
        &mut self,
        api: ApiKey,
        version: i16,
        body: &R,
    ) -> std::io::Result<Bytes> {
        let correlation = self.next_correlation;
        self.next_correlation += 1;
        let header = RequestHeader::default()
            .with_request_api_key(api as i16)
            .with_request_api_version(version)
            .with_correlation_id(correlation)
            .with_client_id(Some(StrBytes::from_static_str("sluice-it")));
        let frame = encode_request(&header, body).expect("encode request");
        self.stream.write_all(&frame)?;
        self.read_frame()
    }

    pub fn read_frame(&mut self) -> std::io::Result<Bytes> {
        let mut len = [0u8; 4];
        self.stream.read_exact(&mut len)?;
        let mut buf = vec![0u8; i32::from_be_bytes(len) as usize];
        self.stream.read_exact(&mut buf)?;
        Ok(Bytes::from(buf))
    }

    /// Sends a request and decodes its response in the same version.
    pub fn request<R: Encodable, S: Decodable>(
        &mut self,
        api: ApiKey,
        version: i16,
        body: &R,
    ) -> S {
        let expected = self.next_correlation;
        let frame = self.request_raw(api, version, body).expect("response");
        let (correlation, response) =
            decode_response::<S>(api, ApiVersion(version), frame).expect("decode response");
        assert_eq!(correlation, expected, "correlation id echoed");
        response
    }

    /// True if the broker closed the connection (EOF) rather than answering.
    pub fn is_closed_by_peer(&mut self) -> bool {
        let mut byte = [0u8; 1];
        match self.stream.read(&mut byte) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
        }
    }
}

/// Runs a command with a bound on its time; returns stdout, panics with stderr on failure.
pub fn run(cmd: &mut Command, timeout: Duration) -> String {
    run_with_input(cmd, b"", timeout)
}

/// Like [`run`], with `input` written to the command's standard input.
pub fn run_with_input(cmd: &mut Command, input: &[u8], timeout: Duration) -> String {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    {
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(input).expect("write stdin");
    }
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if child.try_wait().expect("wait").is_some() {
            break;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "{cmd:?} timed out after {timeout:?}\nstdout:\n{}\nstderr:\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("output");
    assert!(
        out.status.success(),
        "{cmd:?} failed with {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}
