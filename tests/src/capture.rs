//! tcpdump on a link, for proving what crosses the wire (and what does not).

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Stdio};

use anyhow::{Context, Result, bail};

use crate::netns::Netns;

/// A running capture of every packet on one link, printed with payloads.
pub struct Capture {
    child: Child,
}

/// What a capture saw.
#[derive(Debug)]
pub struct Captured {
    /// One line per packet: tcpdump's summary (`IP a.p > b.q: UDP, length n`).
    pub packets: Vec<String>,
    /// Everything tcpdump printed, payloads in ASCII included.
    pub text: String,
}

impl Capture {
    /// Starts tcpdump on `ifname` in `ns` and returns once it listens.
    pub fn start(ns: &Netns, ifname: &str) -> Result<Capture> {
        let mut child = ns
            .command("tcpdump")
            .args(["-i", ifname, "-nn", "-l", "-A", "-U"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("start tcpdump")?;
        let stderr = child.stderr.take().context("tcpdump stderr")?;
        let mut lines = BufReader::new(stderr).lines();
        loop {
            match lines.next() {
                Some(Ok(line)) if line.contains("listening on") => break,
                Some(Ok(_)) => continue,
                _ => {
                    let _ = child.kill();
                    bail!("tcpdump on {ifname} did not start");
                }
            }
        }
        Ok(Capture { child })
    }

    /// Stops the capture and returns what it saw.
    pub fn stop(mut self) -> Result<Captured> {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT)?;
        let mut text = String::new();
        self.child
            .stdout
            .take()
            .context("tcpdump stdout")?
            .read_to_string(&mut text)?;
        self.child.wait()?;
        let packets = text
            .lines()
            .filter(|l| l.len() > 9 && l.as_bytes()[2] == b':' && l.as_bytes()[5] == b':' && l.as_bytes()[8] == b'.')
            .map(str::to_string)
            .collect();
        Ok(Captured { packets, text })
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
