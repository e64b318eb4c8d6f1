use super::*;
use crate::types::{CniResult, IpConfig};

/// A plugin that answers ADD with one address and records nothing: the skel is under test.
struct Echo;

impl Plugin for Echo {
    fn add(&self, a: &Args) -> Result<CniResult, CniError> {
        if a.conf.plugin_type == "fail" {
            return Err(CniError::from_kind(Kind::Busy, "locked"));
        }
        Ok(CniResult {
            ips: vec![IpConfig {
                interface: None,
                address: "10.244.0.2/24".parse().unwrap(),
                gateway: None,
            }],
            ..Default::default()
        })
    }
    fn del(&self, _a: &Args) -> Result<(), CniError> {
        Ok(())
    }
    fn check(&self, _a: &Args) -> Result<(), CniError> {
        Ok(())
    }
}

const GOOD_ENV: &[(&str, &str)] = &[
    ("CNI_COMMAND", "ADD"),
    ("CNI_CONTAINERID", "c1"),
    ("CNI_NETNS", "/run/netns/x"),
    ("CNI_IFNAME", "eth0"),
    ("CNI_PATH", "/opt/cni/bin"),
];

fn call(env: &[(&str, &str)], stdin: &str) -> (i32, Value) {
    let mut out = Vec::new();
    let code = run(&Echo, &env, &mut stdin.as_bytes(), &mut out);
    let v = if out.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&out).expect("stdout is one JSON value")
    };
    (code, v)
}

fn with(key: &str, val: Option<&str>) -> Vec<(&'static str, String)> {
    GOOD_ENV
        .iter()
        .filter(|(k, _)| *k != key)
        .map(|(k, v)| (*k, v.to_string()))
        .chain(val.map(|v| (leak(key), v.to_string())))
        .collect()
}

fn leak(s: &str) -> &'static str {
    Box::leak(s.to_string().into_boxed_str())
}

fn call_with(key: &str, val: Option<&str>, stdin: &str) -> (i32, Value) {
    let env = with(key, val);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    call(&env, stdin)
}

const CONF: &str = r#"{"cniVersion":"1.0.0","name":"net1","type":"echo"}"#;

#[test]
fn add_prints_the_result_in_the_configured_version() {
    let (code, v) = call(GOOD_ENV, CONF);
    assert_eq!(code, 0);
    assert_eq!(v["cniVersion"], "1.0.0");
    assert_eq!(v["ips"][0]["address"], "10.244.0.2/24");
    let (_, v) = call(GOOD_ENV, &CONF.replace("1.0.0", "0.4.0"));
    assert_eq!(v["ips"][0]["version"], "4");
}

#[test]
fn bad_input_gets_the_spec_code() {
    let cases: &[(&str, Option<&str>, &str, u32)] = &[
        ("CNI_COMMAND", None, CONF, ERR_INVALID_ENV),
        ("CNI_COMMAND", Some("FROB"), CONF, ERR_INVALID_ENV),
        ("CNI_CONTAINERID", None, CONF, ERR_INVALID_ENV),
        ("CNI_CONTAINERID", Some("../etc"), CONF, ERR_INVALID_ENV),
        ("CNI_IFNAME", None, CONF, ERR_INVALID_ENV),
        (
            "CNI_IFNAME",
            Some("a-name-longer-than-15"),
            CONF,
            ERR_INVALID_ENV,
        ),
        ("CNI_IFNAME", Some("../x"), CONF, ERR_INVALID_ENV),
        ("CNI_NETNS", None, CONF, ERR_INVALID_ENV),
        ("CNI_ARGS", Some("IP"), CONF, ERR_INVALID_ENV),
        ("CNI_PATH", None, "{not json", ERR_DECODE),
        ("CNI_PATH", None, "[1,2]", ERR_DECODE),
        (
            "CNI_PATH",
            None,
            r#"{"cniVersion":"0.2.0","name":"n","type":"t"}"#,
            ERR_INCOMPATIBLE_VERSION,
        ),
        (
            "CNI_PATH",
            None,
            r#"{"cniVersion":"9.9.9","name":"n","type":"t"}"#,
            ERR_INCOMPATIBLE_VERSION,
        ),
        (
            "CNI_PATH",
            None,
            r#"{"name":"n","type":"t"}"#,
            ERR_INCOMPATIBLE_VERSION,
        ),
        (
            "CNI_PATH",
            None,
            r#"{"cniVersion":"1.0.0","name":"../x","type":"t"}"#,
            ERR_INVALID_CONFIG,
        ),
        (
            "CNI_PATH",
            None,
            r#"{"cniVersion":"1.0.0","name":"","type":"t"}"#,
            ERR_INVALID_CONFIG,
        ),
        (
            "CNI_PATH",
            None,
            r#"{"cniVersion":"1.0.0","name":"n","type":"fail"}"#,
            ERR_TRY_AGAIN,
        ),
    ];
    for (key, val, stdin, want) in cases {
        let (code, v) = call_with(key, *val, stdin);
        assert_eq!(code, 1, "{key}={val:?} {stdin}");
        assert_eq!(v["code"], *want, "{key}={val:?} {stdin}: {v}");
        assert!(v["msg"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    }
}

#[test]
fn del_needs_no_netns_and_prints_nothing() {
    let env = with("CNI_NETNS", None);
    let mut env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    env.retain(|(k, _)| *k != "CNI_COMMAND");
    env.push(("CNI_COMMAND", "DEL"));
    assert_eq!(call(&env, CONF), (0, Value::Null));
}

#[test]
fn verbs_are_gated_by_version() {
    for (verb, min) in [("CHECK", "0.4.0"), ("STATUS", "1.1.0"), ("GC", "1.1.0")] {
        let (code, v) = call_with("CNI_COMMAND", Some(verb), &CONF.replace("1.0.0", "0.3.1"));
        assert_eq!(
            (code, v["code"].clone()),
            (1, json!(ERR_INCOMPATIBLE_VERSION)),
            "{verb}"
        );
        let (code, _) = call_with("CNI_COMMAND", Some(verb), &CONF.replace("1.0.0", min));
        assert_eq!(code, 0, "{verb} at {min}");
    }
}

#[test]
fn version_lists_every_supported_version() {
    let (code, v) = call(&[("CNI_COMMAND", "VERSION")], "");
    assert_eq!(code, 0);
    assert_eq!(v["supportedVersions"], json!(SUPPORTED_VERSIONS));
}

#[test]
fn cni_args_and_valid_attachments_parse() {
    assert_eq!(
        parse_cni_args("IgnoreUnknown=1;IP=10.244.0.9").unwrap(),
        vec![
            ("IgnoreUnknown".to_string(), "1".to_string()),
            ("IP".to_string(), "10.244.0.9".to_string())
        ]
    );
    let stdin = r#"{"cniVersion":"1.1.0","name":"n","type":"t",
        "cni.dev/valid-attachments":[{"containerID":"a","ifname":"eth0"}]}"#;
    let env: &[(&str, &str)] = &[("CNI_COMMAND", "GC"), ("CNI_PATH", "/x")];
    let args = parse(&env, &mut stdin.as_bytes()).unwrap();
    assert_eq!(args.valid_attachments(), vec![("a".into(), "eth0".into())]);
}

#[test]
fn the_state_root_is_read_once_from_the_given_env_and_carried_as_a_value() {
    let stdin = r#"{"cniVersion":"1.1.0","name":"n","type":"t"}"#;
    let args = parse(&GOOD_ENV, &mut stdin.as_bytes()).unwrap();
    assert_eq!(args.ctx.state, StateRoot::default());
    assert_eq!(
        args.nft().state().dir(),
        std::path::Path::new(libnet::nft::DEFAULT_STATE_DIR)
    );
    for (val, want) in [
        ("", libnet::DEFAULT_STATE_ROOT),
        ("/tmp/knit-t", "/tmp/knit-t"),
    ] {
        let mut env = GOOD_ENV.to_vec();
        env.push((STATE_DIR_ENV, val));
        let args = parse(&env.as_slice(), &mut stdin.as_bytes()).unwrap();
        assert_eq!(args.ctx.state.path(), std::path::Path::new(want));
    }
    let mut env = GOOD_ENV.to_vec();
    env.push((STATE_DIR_ENV, "/tmp/knit-t"));
    let args = parse(&env.as_slice(), &mut stdin.as_bytes()).unwrap();
    assert_eq!(
        args.nft().state().dir(),
        std::path::Path::new("/tmp/knit-t/nft")
    );
}

/// ADD succeeds but defers work that fails: the answer is that failure.
struct DefersFailure;

impl Plugin for DefersFailure {
    fn add(&self, a: &Args) -> Result<CniResult, CniError> {
        a.ctx
            .deferred
            .defer(|| Err(CniError::new(ERR_IO, "fsync reservation: EIO")));
        Ok(CniResult::default())
    }
    fn del(&self, _a: &Args) -> Result<(), CniError> {
        Ok(())
    }
    fn check(&self, _a: &Args) -> Result<(), CniError> {
        Ok(())
    }
}

#[test]
fn run_answers_after_its_own_deferred_work_and_reports_its_failure() {
    let stdin = r#"{"cniVersion":"1.1.0","name":"n","type":"t"}"#;
    let mut out = Vec::new();
    let code = run(&DefersFailure, &GOOD_ENV, &mut stdin.as_bytes(), &mut out);
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(code, 1);
    assert_eq!(v["code"], ERR_IO);
    assert_eq!(v["msg"], "fsync reservation: EIO");
    // The next call in the same process has nothing deferred of its own and answers normally.
    let (code, v) = call(GOOD_ENV, stdin);
    assert_eq!(code, 0, "{v}");
}
