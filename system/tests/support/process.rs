//! A `chatd` process under test: started with its stdout piped, read up to the line
//! "chatd ready", then read on in a thread so chatd never writes to a closed pipe; stopped by
//! a signal, or killed when dropped if it still runs.
//!
//! Not provided: stderr capture (it goes to the test's own stderr, where a failure shows it).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// A running process and what it printed.
pub struct Process {
    /// The process.
    pub child: Child,
    /// What it printed up to and including "chatd ready".
    pub banner: Vec<String>,
    /// What it prints after that.
    pub later_lines: mpsc::Receiver<String>,
}

impl Process {
    /// Runs `command` and waits up to `ready_within` for "chatd ready"; `name` labels a
    /// failure.
    pub fn spawn(mut command: Command, name: &str, ready_within: Duration) -> Process {
        let mut child = command
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{name} does not start: {e}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        #[allow(
            clippy::disallowed_methods,
            reason = "a real-runtime test, no simulator here"
        )]
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut banner = Vec::new();
        loop {
            let line = rx
                .recv_timeout(ready_within)
                .unwrap_or_else(|e| panic!("{name} printed {banner:?}, then {e}"));
            let ready = line == "chatd ready";
            banner.push(line);
            if ready {
                break;
            }
        }
        Process {
            child,
            banner,
            later_lines: rx,
        }
    }

    /// The address printed after `prefix` in the banner (e.g. `chatd api http://`), up to
    /// its first `/`.
    pub fn addr(&self, prefix: &str) -> Option<SocketAddr> {
        self.banner.iter().find_map(|line| {
            let rest = line.strip_prefix(prefix)?;
            rest.split('/').next()?.parse().ok()
        })
    }

    /// Sends `signal` (`-INT`, `-TERM`, `-KILL`) and waits for the exit; the exit status and
    /// what the process printed since it was ready.
    pub fn signal(&mut self, signal: &str) -> (ExitStatus, Vec<String>) {
        let sent = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(sent.success(), "kill {signal} failed");
        let status = self.child.wait().expect("the process exits");
        (status, self.later_lines.iter().collect())
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
