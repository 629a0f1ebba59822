//! Running nft to read a table back: in this process through libnftables
//! when the library is there, else the `nft` binary. Both take the same
//! `list …` words and give the same answer (nft's JSON
//! output, or its error text); libnftables is what `nft` itself is built on.
//!
//! In process saves what a spawned `nft` pays on every call: the fork and
//! exec, loading ten libraries, and nft's start-up, about 4 ms here. A
//! context (and its netlink socket, which belongs to the namespace it was
//! opened in) is kept per network namespace for the life of the process, so
//! a second batch reuses the first one's socket and cache.

use std::ffi::{CStr, CString, c_char, c_int, c_uint, c_void};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use super::NftError;
use super::per_netns::PerNetns;

/// The `nft` executable (found in PATH, as the `nftables` crate does).
const NFT: &str = "nft";
/// libnftables' soname (Debian's libnftables1, which nft depends on).
const LIBRARY: &CStr = c"libnftables.so.1";
/// `NFT_CTX_OUTPUT_JSON`: JSON output.
const OUTPUT_JSON: c_uint = 1 << 4;

/// `nft -j list <words>`: the listing as JSON, or an error with nft's own message.
pub(super) fn run_nft(input: &[&str]) -> Result<Vec<u8>, NftError> {
    match library() {
        Some(lib) => lib.run(input),
        None => spawn(input),
    }
}

// The signatures libnftables.h declares (`struct nft_ctx *` as a void pointer).
type CtxNew = unsafe extern "C" fn(u32) -> *mut c_void;
type SetFlags = unsafe extern "C" fn(*mut c_void, c_uint);
type CtxCall = unsafe extern "C" fn(*mut c_void) -> c_int;
type Buffer = unsafe extern "C" fn(*mut c_void) -> *const c_char;
type RunCmd = unsafe extern "C" fn(*mut c_void, *const c_char) -> c_int;

/// The entry points of libnftables this module calls.
struct Library {
    ctx_new: CtxNew,
    set_output_flags: SetFlags,
    buffer_output: CtxCall,
    buffer_error: CtxCall,
    output_buffer: Buffer,
    error_buffer: Buffer,
    run_cmd: RunCmd,
}

/// libnftables, loaded once; `None` where it is missing (then `nft` runs).
fn library() -> Option<&'static Library> {
    static LIBRARY_ONCE: OnceLock<Option<Library>> = OnceLock::new();
    LIBRARY_ONCE.get_or_init(load).as_ref()
}

fn load() -> Option<Library> {
    // SAFETY: dlopen and dlsym are given NUL-terminated names; the library
    // stays loaded for the life of the process (never dlclosed), and each
    // symbol is cast to the signature libnftables.h declares for it.
    unsafe {
        // Lazy binding: a plugin calls a handful of the library's functions.
        let handle = libc::dlopen(LIBRARY.as_ptr(), libc::RTLD_LAZY | libc::RTLD_LOCAL);
        if handle.is_null() {
            return None;
        }
        let symbol = |name: &CStr| {
            let p = libc::dlsym(handle, name.as_ptr());
            (!p.is_null()).then_some(p)
        };
        Some(Library {
            ctx_new: std::mem::transmute::<*mut c_void, CtxNew>(symbol(c"nft_ctx_new")?),
            set_output_flags: std::mem::transmute::<*mut c_void, SetFlags>(symbol(c"nft_ctx_output_set_flags")?),
            buffer_output: std::mem::transmute::<*mut c_void, CtxCall>(symbol(c"nft_ctx_buffer_output")?),
            buffer_error: std::mem::transmute::<*mut c_void, CtxCall>(symbol(c"nft_ctx_buffer_error")?),
            output_buffer: std::mem::transmute::<*mut c_void, Buffer>(symbol(c"nft_ctx_get_output_buffer")?),
            error_buffer: std::mem::transmute::<*mut c_void, Buffer>(symbol(c"nft_ctx_get_error_buffer")?),
            run_cmd: std::mem::transmute::<*mut c_void, RunCmd>(symbol(c"nft_run_cmd_from_buffer")?),
        })
    }
}

/// A libnftables context (`struct nft_ctx *`) with buffered output and error.
struct Context(*mut c_void);

// SAFETY: a context is only ever used under the lock of [`CONTEXTS`], by one
// thread at a time, which is all libnftables asks.
unsafe impl Send for Context {}

/// The contexts made so far, one per network namespace.
static CONTEXTS: PerNetns<Context> = PerNetns::new();

impl Library {
    fn run(&self, words: &[&str]) -> Result<Vec<u8>, NftError> {
        let text = CString::new(format!("list {}", words.join(" "))).map_err(|_| NftError::Failed {
            status: "not run".into(),
            stderr: "the nft input holds a NUL byte".into(),
        })?;
        CONTEXTS
            .with(|| self.new_context(), |ctx| self.run_in(ctx.0, &text))
            .unwrap_or_else(|_| spawn(words))
    }

    /// A fresh context, set to buffer what it prints.
    fn new_context(&self) -> std::io::Result<Context> {
        // SAFETY: the calls libnftables.h declares, on the context just made.
        unsafe {
            let ctx = (self.ctx_new)(0);
            if ctx.is_null() {
                return Err(std::io::Error::other("nft_ctx_new failed"));
            }
            (self.buffer_output)(ctx);
            (self.buffer_error)(ctx);
            Ok(Context(ctx))
        }
    }

    fn run_in(&self, ctx: *mut c_void, text: &CStr) -> Result<Vec<u8>, NftError> {
        // SAFETY: the context is live and ours while the lock is held; the
        // buffers it hands out are copied before the next call can reuse them.
        unsafe {
            (self.set_output_flags)(ctx, OUTPUT_JSON);
            let rc = (self.run_cmd)(ctx, text.as_ptr());
            let copy = |p: *const c_char| {
                if p.is_null() {
                    Vec::new()
                } else {
                    CStr::from_ptr(p).to_bytes().to_vec()
                }
            };
            let (out, err) = (copy((self.output_buffer)(ctx)), copy((self.error_buffer)(ctx)));
            if rc == 0 {
                Ok(out)
            } else {
                Err(NftError::Failed {
                    status: format!("libnftables returned {rc}"),
                    stderr: String::from_utf8_lossy(&err).trim().to_string(),
                })
            }
        }
    }
}

/// The same through the `nft` binary.
fn spawn(words: &[&str]) -> Result<Vec<u8>, NftError> {
    let out = Command::new(NFT)
        .args(["-j", "list"])
        .args(words)
        .stdin(Stdio::null())
        .output()
        .map_err(NftError::Exec)?;
    if out.status.success() {
        Ok(out.stdout)
    } else {
        Err(NftError::Failed {
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{require_program, require_root};

    /// Debian's nft links libnftables: where one is installed, the other
    /// loads, so batches never pay for a spawned nft.
    #[test]
    fn libnftables_loads_where_nft_is_installed() {
        require_program(NFT, "nftables");
        assert!(library().is_some(), "libnftables.so.1 did not load");
    }

    /// Without privileges for netlink or with them, the library answers a
    /// listing it cannot parse with nft's own message, as the binary does.
    #[test]
    fn a_bad_listing_fails_with_nfts_message_both_ways() {
        require_program(NFT, "nftables");
        let bad = ["frobnicate", "inet", "x"];
        let in_process = library().expect("loaded").run(&bad).unwrap_err().to_string();
        let spawned = spawn(&bad).unwrap_err().to_string();
        for e in [&in_process, &spawned] {
            assert!(e.contains("syntax error"), "{e}");
        }
    }

    /// The context kept for a namespace answers each call alone: an error
    /// is not repeated in the next answer, nor a listing in the next.
    #[test]
    fn a_kept_context_answers_each_call_alone() {
        require_program(NFT, "nftables");
        require_root("a libnftables context opens a netlink socket to list tables");
        let lib = library().expect("loaded");
        let bad = ["frobnicate", "inet", "x"];
        let first = lib.run(&bad).unwrap_err().to_string();
        let second = lib.run(&bad).unwrap_err().to_string();
        assert_eq!(first, second);
        for _ in 0..2 {
            let listing = lib.run(&["tables"]).expect("list tables");
            let parsed: serde_json::Value = serde_json::from_slice(&listing).expect("one JSON document");
            assert!(parsed["nftables"].is_array(), "{parsed}");
        }
    }
}
