//! `rmq console` and `rmq metrics` as a user starts them (the console itself is tested in
//! console/tests): the safety checks at start (a public address, an archive that is not there),
//! and the exporter serving (with the archive's metrics) and stopping on SIGTERM.

mod common;

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, Ed, Server};

fn rmq() -> Command {
    Command::new(env!("CARGO_BIN_EXE_rmq"))
}

/// A plain HTTP/1.0 GET on loopback; None while nothing listens.
fn get(port: u16, path: &str) -> Option<String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

#[test]
fn the_console_refuses_a_public_address_without_authentication() {
    let dir = tempfile::tempdir().unwrap();
    let out = rmq()
        .args(["--url", "redis://127.0.0.1:1/", "console", "--listen", "0.0.0.0:0"])
        .arg("--audit-log")
        .arg(dir.path().join("audit.jsonl"))
        .env_remove("RMQ_CONSOLE_AUTH")
        .env_remove("RMQ_CONSOLE_TOKEN")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("without authentication") && err.contains("--auth"), "{err}");
}

#[test]
fn the_metrics_exporter_serves_and_stops_on_sigterm() {
    let server = Server::start(Ed::Lua, &[]);
    let c = server.client();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async { c.push(&rmq_client::Push::new("jobs", "x")).await.unwrap() });
    let port = free_port();
    let mut child = rmq()
        .args(["--url", &server.url(), "metrics", "--listen", &format!("127.0.0.1:{port}")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let end = Instant::now() + Duration::from_secs(30);
    let text = loop {
        if let Some(t) = get(port, "/metrics") {
            break t;
        }
        assert!(child.try_wait().unwrap().is_none(), "rmq metrics exited");
        assert!(Instant::now() < end, "rmq metrics did not serve within 30 s");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(text.starts_with("HTTP/1.0 200") || text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("rmq_queue_messages{queue=\"jobs\",state=\"ready\"} 1"), "{text}");
    let pid = child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let end = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < end, "rmq metrics did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
}

#[test]
fn the_console_refuses_to_start_without_the_archive_it_was_given() {
    let dir = tempfile::tempdir().unwrap();
    let missing = format!("sqlite://{}", dir.path().join("missing.db").display());
    let out = rmq()
        .args(["--url", "redis://127.0.0.1:1/", "console", "--listen", "127.0.0.1:0", "--archive-db", &missing])
        .arg("--audit-log")
        .arg(dir.path().join("audit.jsonl"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--archive-db") && err.contains("missing.db"), "{err}");
}

#[test]
fn the_metrics_exporter_serves_the_archive_metrics() {
    let server = Server::start(Ed::Lua, &[]);
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("archive.db").display());
    let migrate = rmq().args(["--url", &server.url(), "archive", "migrate", "--db", &db]).stdin(Stdio::null()).output().unwrap();
    assert!(migrate.status.success(), "{}", String::from_utf8_lossy(&migrate.stderr));
    let port = free_port();
    let mut child = rmq()
        .args(["--url", &server.url(), "metrics", "--listen", &format!("127.0.0.1:{port}"), "--archive-db", &db])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let end = Instant::now() + Duration::from_secs(30);
    let text = loop {
        if let Some(t) = get(port, "/metrics") {
            break t;
        }
        assert!(child.try_wait().unwrap().is_none(), "rmq metrics exited");
        assert!(Instant::now() < end, "rmq metrics did not serve within 30 s");
        std::thread::sleep(Duration::from_millis(50));
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(text.contains("\nrmq_archive_up 1\n"), "{text}");
}
