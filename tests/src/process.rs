//! Running commands with a deadline, and polling instead of sleeping.

use std::io::Read;
use std::process::{Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// Timeout for tooling commands (`ip`, `nft`, `tc`) that should return at once.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// How often pollers look again; short, since each look is cheap.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Runs `cmd` to completion capturing stdout/stderr; kills it after `timeout`.
///
/// A non-zero exit is not an error here: callers decide (see `Output::status`).
pub fn output_with_timeout(cmd: &mut Command, timeout: Duration) -> Result<Output> {
    let shown = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("spawn {shown}"))?;
    // Drain both pipes on threads so a chatty child cannot block on a full pipe.
    let out = drain(child.stdout.take());
    let err = drain(child.stderr.take());
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{shown} timed out after {timeout:?}");
        }
        thread::sleep(POLL_INTERVAL);
    };
    Ok(Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    })
}

fn drain(pipe: Option<impl Read + Send + 'static>) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_end(&mut buf);
        }
        buf
    })
}

/// Runs `cmd` with `stdin` written to it, capturing stdout and stderr (a
/// plugin call, say).
pub fn with_stdin(cmd: &mut Command, stdin: &[u8]) -> Result<Output> {
    use std::io::Write;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    child.stdin.take().context("stdin")?.write_all(stdin)?;
    Ok(child.wait_with_output()?)
}

/// Every file under `dir` (recursively) but those whose name ends with
/// `skip`, as (path, text): for searching state for what must not be there.
pub fn files_under(dir: &std::path::Path, skip: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files_under(&path, skip));
        } else if !path.to_string_lossy().ends_with(skip) {
            let text = String::from_utf8_lossy(&std::fs::read(&path).unwrap_or_default()).into_owned();
            out.push((path.display().to_string(), text));
        }
    }
    out
}

/// Calls `probe` until it returns `Some`, or gives up after `timeout`.
///
/// The way to wait for readiness (a listener answers, a record resolves)
/// without a fixed sleep. `probe` should itself be bounded.
pub fn poll_until<T>(timeout: Duration, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = probe() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(POLL_INTERVAL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slow_command_is_killed() {
        let err = output_with_timeout(Command::new("sleep").arg("30"), Duration::from_millis(200)).unwrap_err();
        assert!(err.to_string().contains("timed out"), "{err}");
    }

    #[test]
    fn poll_until_gives_up() {
        let mut n = 0;
        assert_eq!(
            poll_until(Duration::from_millis(100), || {
                n += 1;
                None::<()>
            }),
            None
        );
        assert!(n > 1);
        assert_eq!(poll_until(Duration::from_secs(1), || Some(7)), Some(7));
    }
}
