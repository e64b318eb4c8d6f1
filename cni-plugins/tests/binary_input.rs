//! The `knit-cni` binary on input that is not UTF-8: with `panic = "abort"` a panic would end
//! the process without a CNI answer, so each case must get a normal error instead.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::process::{Command, Stdio};

fn knit_cni() -> Command {
    Command::new(env!("CARGO_BIN_EXE_knit-cni"))
}

#[test]
fn a_plugin_name_that_is_not_utf8_is_an_unknown_plugin() {
    let out = knit_cni()
        .arg(OsStr::from_bytes(b"br\xffdge"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown plugin"), "{err}");
}

#[test]
fn a_cni_variable_that_is_not_utf8_reads_as_unset() {
    let out = knit_cni()
        .arg("loopback")
        .env_clear()
        .env("CNI_COMMAND", OsStr::from_bytes(b"AD\xffD"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["code"], 4, "{v}");
}
