//! `dummy`: a dummy link in the container under CNI_IFNAME, with the addresses of the
//! (required) IPAM (containernetworking/plugins `plugins/main/dummy`). The verbs are in
//! [`super::sublink`]. (The kernel this was built on has no dummy driver: the message is
//! unit-tested in libnet, the kernel test says "not run".)

use libnet::driver::macvlan::{SubKind, SubNet};

use super::sublink;
use crate::ipam;
use crate::skel::{Args, CniError, Plugin};
use crate::types::CniResult;

pub struct Dummy;

const NET: SubNet = SubNet {
    kind: SubKind::Dummy,
    master: None,
    master_in_container: false,
    mtu: None,
};

fn load(a: &Args) -> Result<(), CniError> {
    if ipam::ipam_type(a).is_empty() {
        return Err(CniError::config(
            "dummy interface requires an IPAM configuration",
        ));
    }
    Ok(())
}

impl Plugin for Dummy {
    fn add(&self, a: &Args) -> Result<CniResult, CniError> {
        load(a)?;
        sublink::add(a, &NET, "")
    }

    fn del(&self, a: &Args) -> Result<(), CniError> {
        load(a)?;
        sublink::del(a)
    }

    fn check(&self, a: &Args) -> Result<(), CniError> {
        load(a)?;
        sublink::check(a, &NET)
    }

    fn gc(&self, a: &Args) -> Result<(), CniError> {
        load(a)?;
        sublink::gc(a)
    }

    fn status(&self, a: &Args) -> Result<(), CniError> {
        load(a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::shared::tests::call;

    #[test]
    fn ipam_is_required() {
        let conf = r#"{"cniVersion":"1.0.0","name":"n","type":"dummy"}"#;
        for verb in ["ADD", "DEL", "CHECK"] {
            let (code, out) = call(&Dummy, verb, conf);
            assert_eq!((code, out["code"].as_u64()), (1, Some(7)), "{verb}: {out}");
        }
    }
}
