//! Kernel names, numbers and addresses the overlay uses, in one place.

use std::net::IpAddr;

/// A network's bridge: `knov<vni in hex>` (at most 10 characters).
pub const BRIDGE_PREFIX: &str = "knov";
/// A network's vxlan device: `knvx<vni>` (at most 12 characters).
pub const VXLAN_PREFIX: &str = "knvx";
/// The largest VNI (24 bits).
pub const VNI_MAX: u32 = 0xff_ffff;
/// MTU of the bridge, the vxlan device and the containers' veths: 1500 minus the 50 bytes of
/// VXLAN over IPv4 (outer IP 20 + UDP 8 + VXLAN 8 + inner Ethernet 14).
pub const MTU: u32 = 1450;
/// `proto 107` ("k"): the routes the overlay owns (routed mode). No protocol of
/// `/etc/iproute2/rt_protos` uses it.
pub const RTPROT_KNIT_OVERLAY: u8 = 107;

/// `knov<vni hex>`
pub fn bridge_name(vni: u32) -> String {
    format!("{BRIDGE_PREFIX}{vni:x}")
}

/// `knvx<vni>`
pub fn vxlan_name(vni: u32) -> String {
    format!("{VXLAN_PREFIX}{vni}")
}

/// The VNI a bridge or vxlan device name of ours stands for, or `None` for any other name.
pub fn vni_of(name: &str) -> Option<u32> {
    let canonical = |vni: u32, f: fn(u32) -> String| (f(vni) == name).then_some(vni);
    if let Some(hex) = name.strip_prefix(BRIDGE_PREFIX) {
        canonical(u32::from_str_radix(hex, 16).ok()?, bridge_name)
    } else if let Some(dec) = name.strip_prefix(VXLAN_PREFIX) {
        canonical(dec.parse().ok()?, vxlan_name)
    } else {
        None
    }
}

/// The anycast gateway's MAC for a VNI, the same on every host's bridge: locally
/// administered, unicast, `06:6b:6e:VV:VV:VV`.
pub fn gateway_mac(vni: u32) -> [u8; 6] {
    let v = vni.to_be_bytes();
    [0x06, 0x6b, 0x6e, v[1], v[2], v[3]]
}

/// A MAC derived from an endpoint's address, `0a:58:` and the IPv4 address (or the last 4
/// bytes of an IPv6 one), as kubenet does. An address handed on to a new container then keeps
/// its MAC: the peers' ARP caches stay right and only the FDB entry moves to the new host,
/// instead of peers holding the old MAC until their neighbour entry is re-probed (~50 s).
pub fn endpoint_mac(ip: IpAddr) -> [u8; 6] {
    let b = match ip {
        IpAddr::V4(a) => a.octets(),
        IpAddr::V6(a) => {
            let o = a.octets();
            [o[12], o[13], o[14], o[15]]
        }
    };
    [0x0a, 0x58, b[0], b[1], b[2], b[3]]
}

#[cfg(test)]
mod tests {
    use super::*;
    use libnet::netlink::link::IFNAME_MAX;

    #[test]
    fn names_fit_the_kernel_and_map_back_to_their_vni() {
        for vni in [1, 42, 4096, VNI_MAX] {
            let (b, v) = (bridge_name(vni), vxlan_name(vni));
            assert!(b.len() <= IFNAME_MAX && v.len() <= IFNAME_MAX, "{b} {v}");
            assert_eq!((vni_of(&b), vni_of(&v)), (Some(vni), Some(vni)));
        }
        assert_eq!(bridge_name(0xabc), "knovabc");
        assert_eq!(vxlan_name(0xabc), "knvx2748");
        for other in [
            "knov", "knvx", "knovxyz", "knvx01", "knovABC", "eth0", "knvx+1",
        ] {
            assert_eq!(vni_of(other), None, "{other}");
        }
    }

    #[test]
    fn gateway_and_endpoint_macs_are_unicast_and_locally_administered() {
        let g = gateway_mac(0x12_3456);
        assert_eq!(g, [0x06, 0x6b, 0x6e, 0x12, 0x34, 0x56]);
        let e = endpoint_mac("10.244.1.5".parse().unwrap());
        assert_eq!(e, [0x0a, 0x58, 10, 244, 1, 5]);
        let e6 = endpoint_mac("fd00::a:b0c".parse().unwrap());
        assert_eq!(e6, [0x0a, 0x58, 0, 0x0a, 0x0b, 0x0c]);
        for m in [g, e, e6] {
            assert_eq!(m[0] & 0b11, 0b10, "{m:?}");
        }
    }
}
