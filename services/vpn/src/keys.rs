//! WireGuard keys. A public key is plain data (config, store, status); a
//! private key has no `Display` and a redacted `Debug`, so it cannot reach a
//! result or a log by accident, and lives on disk only in 0600 files.

use std::fmt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use netsvc_core::store::{atomic_write, create_dirs};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use wireguard_control::Key;

/// A Curve25519 public key, base64 as `wg` writes it.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct PublicKey(pub Key);

impl PublicKey {
    pub fn bytes(&self) -> &[u8; 32] {
        &self.0.0
    }
}

impl FromStr for PublicKey {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let key = Key::from_base64(s.trim())
            .map_err(|_| "must be a WireGuard key: 32 bytes in base64 (44 characters, as `wg pubkey` prints)")?;
        if key.0 == [0; 32] {
            return Err("is the all-zero key".into());
        }
        Ok(PublicKey(key))
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.to_base64())
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

impl Serialize for PublicKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for PublicKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

/// A private key. Never serialized, never displayed.
#[derive(Clone, PartialEq, Eq)]
pub struct PrivateKey(Key);

impl PrivateKey {
    pub fn generate() -> PrivateKey {
        PrivateKey(Key::generate_private())
    }

    pub fn from_bytes(bytes: [u8; 32]) -> PrivateKey {
        PrivateKey(Key(bytes))
    }

    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.get_public())
    }

    pub fn bytes(&self) -> &[u8; 32] {
        &self.0.0
    }

    pub(crate) fn key(&self) -> &Key {
        &self.0
    }

    /// Reads a key file as `wg genkey` writes it (base64, one line); one
    /// that others than its owner may read is refused.
    pub fn read(path: &Path) -> Result<PrivateKey, String> {
        let meta = std::fs::metadata(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(format!(
                "{} is readable by others (mode {mode:o}); a private key file must be 0600",
                path.display()
            ));
        }
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let key = Key::from_base64(text.trim())
            .map_err(|_| format!("{} does not hold a WireGuard key in base64", path.display()))?;
        Ok(PrivateKey(key))
    }

    /// Writes the key to `path` with mode 0600 from the start (temp + fsync
    /// + rename), creating its folder 0700.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let dir = path.parent().unwrap_or(Path::new("."));
        create_dirs(dir)
            .and_then(|()| atomic_write(path, format!("{}\n", self.0.to_base64()).as_bytes()))
            .map_err(std::io::Error::other)
    }

    /// The key in `path`, made and written there first when there is none.
    pub fn load_or_create(path: &Path) -> std::io::Result<PrivateKey> {
        match PrivateKey::read(path) {
            Ok(key) => Ok(key),
            Err(_) if !path.exists() => {
                let key = PrivateKey::generate();
                key.write(path)?;
                Ok(key)
            }
            Err(why) => Err(std::io::Error::other(why)),
        }
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PrivateKey(redacted)")
    }
}

/// Where a node keeps its key pair: `<state dir>/vpn/nodes/<node>.key`.
pub fn node_key_path(state_dir: &Path, node: &str) -> PathBuf {
    state_dir.join("vpn").join("nodes").join(format!("{node}.key"))
}

/// True when only the owner may read or write `path`.
pub fn is_private(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o077 == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_public_key_round_trips_in_base64() {
        let private = PrivateKey::generate();
        let public = private.public();
        let text = public.to_string();
        assert_eq!(text.len(), 44);
        assert_eq!(text.parse::<PublicKey>().unwrap(), public);
        assert_eq!(serde_json::to_string(&public).unwrap(), format!("\"{text}\""));
    }

    #[test]
    fn bad_keys_are_refused() {
        for bad in [
            "",
            "abc",
            "AAAA",
            &"A".repeat(44),
            "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8yk",
        ] {
            assert!(bad.parse::<PublicKey>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_private_key_never_prints() {
        let private = PrivateKey::generate();
        let shown = format!("{private:?}");
        assert!(!shown.contains(&private.0.to_base64()));
        assert_eq!(shown, "PrivateKey(redacted)");
    }

    #[test]
    fn key_files_are_0600_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = node_key_path(dir.path(), "node-a");
        let first = PrivateKey::load_or_create(&path).unwrap();
        assert!(is_private(&path));
        assert!(is_private(path.parent().unwrap()));
        assert_eq!(PrivateKey::load_or_create(&path).unwrap(), first);
        std::fs::write(&path, "garbage").unwrap();
        assert!(PrivateKey::load_or_create(&path).is_err());
    }

    #[test]
    fn a_key_file_others_can_read_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        PrivateKey::generate().write(&path).unwrap();
        assert!(PrivateKey::read(&path).is_ok());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(PrivateKey::read(&path).unwrap_err().contains("0600"));
    }
}
