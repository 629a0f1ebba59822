//! ICMP reachability with iputils `ping`.

use std::net::IpAddr;
use std::time::Duration;

use anyhow::{Result, bail};

use crate::netns::Netns;

impl Netns {
    /// Pings `dst` from this namespace until `count` replies arrive; fails
    /// when fewer arrived within `timeout` (whole seconds, at least 1).
    pub fn ping_check(&self, dst: IpAddr, count: u32, timeout: Duration) -> Result<()> {
        let secs = timeout.as_secs_f64().ceil().max(1.0) as u64;
        let args = [
            "-n".to_owned(),
            "-q".to_owned(),
            format!("-c{count}"),
            "-i0.2".to_owned(),
            "-W1".to_owned(),
            format!("-w{secs}"),
            dst.to_string(),
        ];
        // ping keeps its own deadline; ours only guards against a hung ping.
        let out = self.output("ping", &args, Duration::from_secs(secs + 5))?;
        if !out.status.success() {
            bail!(
                "[{}] ping {dst}: {}{}",
                self.name(),
                String::from_utf8_lossy(&out.stdout).trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    /// [`Netns::ping_check`] as a bool, for asserting unreachability too.
    pub fn ping(&self, dst: IpAddr, count: u32, timeout: Duration) -> bool {
        self.ping_check(dst, count, timeout).is_ok()
    }
}
