//! The only code of the nft layer that touches the kernel: run one nft script as one transaction.
//!
//! Two implementations of [`NftApply`]: [`LibNft`] calls libnftables in-process (loaded with
//! `dlopen`, so no -dev package is needed to build), [`NftCli`] forks `nft -f -` (kept for
//! comparison and as a fallback where the library is missing). Both run in the calling thread's
//! network namespace: libnftables opens its netlink socket when the context is made, which we do
//! per call, on the calling thread.

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use super::error::NftError;
use super::lookup::Found;
use super::plan::ElemOp;
use super::wire::WireElem;

/// Runs nft scripts. Each call is one atomic transaction (nft batches a whole buffer).
pub trait NftApply {
    /// Run `script`; `op` names the operation for errors.
    fn run(&self, op: &'static str, script: &str) -> Result<(), NftError>;
    /// Run a read command (`list ...`, `get ...`) and return its output; `json` asks for JSON.
    fn query(&self, op: &'static str, cmd: &str, json: bool) -> Result<String, NftError>;
    /// Look elements up: `None` if absent, else their map data and comment.
    /// Default: one NFT_MSG_GETSETELEM each over one netlink socket, O(1) in the table's size.
    fn lookup(&self, elems: &[WireElem]) -> Result<Vec<Option<Found>>, NftError> {
        super::lookup::lookup(elems)
    }
    /// Apply element operations as one transaction, `comment` on every added element.
    /// Default: one nfnetlink batch built by [`super::wire::batch`] (no libnftables).
    fn elems(&self, op: &'static str, ops: &[ElemOp], comment: &str) -> Result<(), NftError> {
        super::wire::apply(op, ops, comment)
    }
}

/// C string literals: nothing to convert (or fail) at run time.
const LIBNFTABLES: &[&CStr] = &[
    c"libnftables.so.1",
    c"/usr/lib/x86_64-linux-gnu/libnftables.so.1",
];
const NFT_CTX_OUTPUT_JSON: u32 = 1 << 4;

type CtxNew = unsafe extern "C" fn(u32) -> *mut c_void;
type CtxFree = unsafe extern "C" fn(*mut c_void);
type CtxInt = unsafe extern "C" fn(*mut c_void) -> c_int;
type CtxStr = unsafe extern "C" fn(*mut c_void) -> *const c_char;
type RunCmd = unsafe extern "C" fn(*mut c_void, *const c_char) -> c_int;
type SetFlags = unsafe extern "C" fn(*mut c_void, u32);

/// The libnftables entry points we use (resolved once per process).
struct Lib {
    ctx_new: CtxNew,
    ctx_free: CtxFree,
    buffer_output: CtxInt,
    buffer_error: CtxInt,
    get_output: CtxStr,
    get_error: CtxStr,
    run_cmd: RunCmd,
    set_output_flags: SetFlags,
}

// SAFETY: plain function pointers into a library that is never unloaded.
unsafe impl Send for Lib {}
unsafe impl Sync for Lib {}

fn load() -> Result<Lib, String> {
    let mut handle = std::ptr::null_mut();
    for name in LIBNFTABLES {
        // SAFETY: dlopen with a valid C string; the handle is kept for the process lifetime.
        handle = unsafe { libc::dlopen(name.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
        if !handle.is_null() {
            break;
        }
    }
    if handle.is_null() {
        return Err(format!(
            "cannot dlopen {}",
            LIBNFTABLES[0].to_string_lossy()
        ));
    }
    let sym = |name: &CStr| -> Result<*mut c_void, String> {
        // SAFETY: handle is a live dlopen handle, name a valid C string.
        let p = unsafe { libc::dlsym(handle, name.as_ptr()) };
        if p.is_null() {
            Err(format!("libnftables lacks {}", name.to_string_lossy()))
        } else {
            Ok(p)
        }
    };
    // SAFETY: each symbol has the C signature declared by libnftables.h for the type it is cast to.
    unsafe {
        Ok(Lib {
            ctx_new: std::mem::transmute::<*mut c_void, CtxNew>(sym(c"nft_ctx_new")?),
            ctx_free: std::mem::transmute::<*mut c_void, CtxFree>(sym(c"nft_ctx_free")?),
            buffer_output: std::mem::transmute::<*mut c_void, CtxInt>(sym(
                c"nft_ctx_buffer_output",
            )?),
            buffer_error: std::mem::transmute::<*mut c_void, CtxInt>(sym(c"nft_ctx_buffer_error")?),
            get_output: std::mem::transmute::<*mut c_void, CtxStr>(sym(
                c"nft_ctx_get_output_buffer",
            )?),
            get_error: std::mem::transmute::<*mut c_void, CtxStr>(sym(
                c"nft_ctx_get_error_buffer",
            )?),
            run_cmd: std::mem::transmute::<*mut c_void, RunCmd>(sym(c"nft_run_cmd_from_buffer")?),
            set_output_flags: std::mem::transmute::<*mut c_void, SetFlags>(sym(
                c"nft_ctx_output_set_flags",
            )?),
        })
    }
}

fn lib() -> Result<&'static Lib, NftError> {
    static LIB: OnceLock<Result<Lib, String>> = OnceLock::new();
    LIB.get_or_init(load)
        .as_ref()
        .map_err(|e| NftError::Library(e.clone()))
}

/// libnftables in-process (falling back to forking `nft` if the library cannot be loaded).
/// A fresh context per call, so the netlink socket is opened in the
/// calling thread's network namespace and no stale cache is ever reused.
#[derive(Debug, Default, Clone, Copy)]
pub struct LibNft;

impl LibNft {
    /// The library is loaded on first use (only skeleton creation and GC need it).
    pub fn new() -> LibNft {
        LibNft
    }

    fn exec(&self, op: &'static str, script: &str, json: bool) -> Result<String, NftError> {
        let Ok(lib) = lib() else {
            // No libnftables on this host: the nft binary does the same, only slower.
            let args: &[&str] = if json {
                &["-j", "-f", "-"]
            } else {
                &["-f", "-"]
            };
            return NftCli.exec(op, args, script);
        };
        let cmd = CString::new(script).map_err(|_| NftError::invalid("nft script", "NUL byte"))?;
        // SAFETY: the context is created, used and freed within this call on this thread; the
        // buffers returned by get_output/get_error live until nft_ctx_free and are copied first.
        unsafe {
            let ctx = (lib.ctx_new)(0);
            if ctx.is_null() {
                return Err(NftError::Library("nft_ctx_new failed".into()));
            }
            (lib.buffer_output)(ctx);
            (lib.buffer_error)(ctx);
            if json {
                (lib.set_output_flags)(ctx, NFT_CTX_OUTPUT_JSON);
            }
            let rc = (lib.run_cmd)(ctx, cmd.as_ptr());
            let text = |p: *const c_char| {
                if p.is_null() {
                    String::new()
                } else {
                    CStr::from_ptr(p).to_string_lossy().into_owned()
                }
            };
            let out = text((lib.get_output)(ctx));
            let err = text((lib.get_error)(ctx));
            (lib.ctx_free)(ctx);
            if rc == 0 {
                Ok(out)
            } else {
                Err(NftError::apply(op, err))
            }
        }
    }
}

impl NftApply for LibNft {
    fn run(&self, op: &'static str, script: &str) -> Result<(), NftError> {
        self.exec(op, script, false).map(|_| ())
    }

    fn query(&self, op: &'static str, cmd: &str, json: bool) -> Result<String, NftError> {
        self.exec(op, cmd, json)
    }
}

/// Forks `nft -f -` per call (about 6-15 ms each here; see the design note).
#[derive(Debug, Default, Clone, Copy)]
pub struct NftCli;

impl NftCli {
    fn exec(&self, op: &'static str, args: &[&str], stdin: &str) -> Result<String, NftError> {
        let mut child = Command::new("nft")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| NftError::Library(format!("spawn nft: {e}")))?;
        if let Some(mut w) = child.stdin.take() {
            w.write_all(stdin.as_bytes())
                .map_err(|e| NftError::Library(format!("write to nft: {e}")))?;
        }
        let out = child
            .wait_with_output()
            .map_err(|e| NftError::Library(format!("wait for nft: {e}")))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(NftError::apply(op, String::from_utf8_lossy(&out.stderr)))
        }
    }
}

impl NftApply for NftCli {
    fn run(&self, op: &'static str, script: &str) -> Result<(), NftError> {
        self.exec(op, &["-f", "-"], script).map(|_| ())
    }

    fn query(&self, op: &'static str, cmd: &str, json: bool) -> Result<String, NftError> {
        let args: &[&str] = if json {
            &["-j", "-f", "-"]
        } else {
            &["-f", "-"]
        };
        self.exec(op, args, cmd)
    }
}
