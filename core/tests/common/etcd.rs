//! A real etcd server for one test: its own data dir and free ports on
//! 127.0.0.1, killed when dropped.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Etcd {
    child: Child,
    port: u16,
    scheme: &'static str,
    _dir: tempfile::TempDir,
}

/// A throwaway CA, a server certificate for 127.0.0.1 and a client
/// certificate, made with openssl.
pub struct Certs {
    dir: tempfile::TempDir,
}

impl Certs {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let sh = |script: &str| {
            let out = Command::new("sh")
                .arg("-ec")
                .arg(script)
                .current_dir(dir.path())
                .output()
                .expect("sh");
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        };
        let key = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
        sh(&format!(
            "openssl req -x509 {key} -keyout ca.key -out ca.crt -days 1 -subj /CN=netsvc-test-ca 2>/dev/null"
        ));
        for (name, usage, san) in [
            ("server", "serverAuth", "subjectAltName=IP:127.0.0.1\n"),
            ("client", "clientAuth", ""),
        ] {
            sh(&format!(
                "printf '{san}extendedKeyUsage={usage}\\n' > {name}.ext
                 openssl req {key} -keyout {name}.key -out {name}.csr -subj /CN={name} 2>/dev/null
                 openssl x509 -req -in {name}.csr -CA ca.crt -CAkey ca.key -CAcreateserial \\
                   -out {name}.crt -days 1 -extfile {name}.ext 2>/dev/null"
            ));
        }
        Certs { dir }
    }

    pub fn path(&self, file: &str) -> std::path::PathBuf {
        self.dir.path().join(file)
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

impl Etcd {
    /// Starts etcd and waits until it answers.
    pub fn start() -> Self {
        Self::launch(None)
    }

    /// Starts etcd serving client TLS with `certs`' server certificate and
    /// accepting only clients whose certificate the same CA signed.
    pub fn start_tls(certs: &Certs) -> Self {
        Self::launch(Some(certs))
    }

    fn launch(tls: Option<&Certs>) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let (port, peer) = (free_port(), free_port());
        let scheme = if tls.is_some() { "https" } else { "http" };
        let client = format!("{scheme}://127.0.0.1:{port}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let mut cmd = Command::new("etcd");
        cmd.args(["--name", "test", "--data-dir"])
            .arg(dir.path().join("data"))
            .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
            .args([
                "--listen-peer-urls",
                &peer_url,
                "--initial-advertise-peer-urls",
                &peer_url,
            ])
            .args(["--initial-cluster", &format!("test={peer_url}")]);
        if let Some(c) = tls {
            cmd.arg("--cert-file")
                .arg(c.path("server.crt"))
                .arg("--key-file")
                .arg(c.path("server.key"))
                .arg("--trusted-ca-file")
                .arg(c.path("ca.crt"))
                .arg("--client-cert-auth");
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("etcd is installed (Debian etcd-server)");
        let etcd = Etcd {
            child,
            port,
            scheme,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "etcd did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        etcd
    }

    pub fn url(&self) -> String {
        format!("{}://127.0.0.1:{}", self.scheme, self.port)
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
