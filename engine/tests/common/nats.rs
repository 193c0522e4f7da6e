//! For the cluster tests: a `nats-server` with JetStream on a free loopback
//! port (killed and its store removed on drop), and the partitions a node
//! serves as its log says.

use super::DataDir;
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct NatsServer {
    child: Child,
    pub url: String,
    _dir: DataDir,
}

impl NatsServer {
    pub fn start(name: &str) -> NatsServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let dir = DataDir::new(&format!("nats-{name}"));
        let child = Command::new("nats-server")
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(&*dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server not found: .ci/run installs Debian's nats-server");
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "nats-server did not listen on {port} within 10 s");
            std::thread::sleep(Duration::from_millis(20));
        }
        NatsServer { child, url: format!("nats://127.0.0.1:{port}"), _dir: dir }
    }
}

impl NatsServer {
    /// Sends `sig` to the server (SIGSTOP pauses it, SIGCONT resumes it).
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The partitions a node serves, replaying its "serving partition" and
/// "stopped serving partition" log records in order. A log that holds
/// several runs of the node (a restart appends) starts over at each
/// "cluster host started".
pub fn served_partitions(records: impl IntoIterator<Item = serde_json::Value>) -> std::collections::BTreeSet<u64> {
    let mut held = std::collections::BTreeSet::new();
    for r in records {
        match (r["message"].as_str(), r["partition"].as_u64()) {
            (Some("cluster host started"), _) => held.clear(),
            (Some("serving partition"), Some(p)) => drop(held.insert(p)),
            (Some("stopped serving partition"), Some(p)) => drop(held.remove(&p)),
            _ => {}
        }
    }
    held
}
