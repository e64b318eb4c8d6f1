//! The simulated agents against a controller's end played by the test, over loopback.

use super::*;
use overlay_vxlan::{Mac, Mode, NetworkDesired, RemoteEndpoint, Subnet};
use std::net::TcpListener;

/// A controller's end of one agent's connection.
struct Peer(TcpStream);

impl Peer {
    fn accept(l: &TcpListener) -> Peer {
        let (c, _) = l.accept().unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        Peer(c)
    }

    fn read(&mut self) -> AgentMsg {
        let mut head = [0u8; 4];
        self.0.read_exact(&mut head).unwrap();
        let mut body = vec![0u8; u32::from_be_bytes(head) as usize];
        self.0.read_exact(&mut body).unwrap();
        serde_json::from_slice(&body).unwrap()
    }

    fn send(&mut self, msg: &ControllerMsg) {
        self.0.write_all(&frame(msg).unwrap()).unwrap();
    }
}

fn endpoint(ip: &str) -> RemoteEndpoint {
    RemoteEndpoint {
        ip: ip.parse().unwrap(),
        mac: Mac([0x0a, 0x58, 10, 9, 0, 2]),
        host: "172.16.0.2".parse().unwrap(),
    }
}

fn full(version: u64) -> ControllerMsg {
    let net = NetworkDesired {
        id: "wide".into(),
        vni: 4096,
        subnets: vec![Subnet {
            cidr: "10.9.0.0/16".parse().unwrap(),
            gateway: None,
        }],
        mode: Mode::Vxlan,
        underlay_ip: "172.16.0.1".parse().unwrap(),
        endpoints: vec![endpoint("10.9.0.2")],
        hosts: vec![],
    };
    ControllerMsg::Full {
        version,
        state: HostDesired {
            format: overlay_vxlan::FORMAT,
            networks: vec![net],
        },
    }
}

fn delta(base: u64, change: Change) -> ControllerMsg {
    ControllerMsg::Delta {
        base,
        version: base + 1,
        changes: vec![change],
    }
}

/// The JSON of a frame as the controller writes it.
fn body(f: &[u8]) -> &[u8] {
    let Ok(Split::Whole { json, .. }) = split(f) else {
        panic!("not a whole frame")
    };
    json
}

#[test]
fn last_changes_decodes_once_and_leaves_other_frames_to_the_decoder() {
    let put = Change::EndpointPut {
        network: "wide".into(),
        endpoint: endpoint("10.9.0.7"),
    };
    let json = serde_json::to_vec(std::slice::from_ref(&put)).unwrap();
    let mut last = LastChanges::default();
    let f = sdn_controller::proto::delta_frame(5, 6, &json).unwrap();
    let (base, version, changes) = last.delta(body(&f)).unwrap().unwrap();
    assert_eq!((base, version, changes), (5, 6, &[put.clone()][..]));
    let decoded = last.changes.as_ptr();
    // The same changes at another base: not decoded again.
    let f = sdn_controller::proto::delta_frame(6, 9, &json).unwrap();
    let (base, version, changes) = last.delta(body(&f)).unwrap().unwrap();
    assert_eq!((base, version, changes), (6, 9, &[put][..]));
    assert_eq!(last.changes.as_ptr(), decoded);
    // Other changes are decoded; damaged ones are an error.
    let del = Change::EndpointDel {
        network: "wide".into(),
        ip: "10.9.0.7".parse().unwrap(),
    };
    let json = serde_json::to_vec(std::slice::from_ref(&del)).unwrap();
    let f = sdn_controller::proto::delta_frame(9, 10, &json).unwrap();
    assert_eq!(last.delta(body(&f)).unwrap().unwrap().2, &[del][..]);
    let f = sdn_controller::proto::delta_frame(10, 11, b"[{\"op\":").unwrap();
    assert!(last.delta(body(&f)).is_err());
    // Not a delta in the controller's layout: for the agent's decoder.
    assert!(last
        .delta(body(&frame(&full(3)).unwrap()))
        .unwrap()
        .is_none());
    assert!(last
        .delta(br#"{"base":1,"type":"delta"}"#)
        .unwrap()
        .is_none());
}

fn until(what: &str, ok: impl Fn() -> bool) {
    let t = Instant::now();
    while !ok() {
        assert!(t.elapsed() < Duration::from_secs(5), "waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// One simulated agent (h0: sampled) synced by a Full at version 1.
fn synced() -> (Agents, Peer) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let agents = Agents::start(l.local_addr().unwrap(), 1).unwrap();
    let mut peer = Peer::accept(&l);
    assert!(matches!(peer.read(), AgentMsg::Hello { host, .. } if host == "h0"));
    peer.send(&full(1));
    assert_eq!(peer.read(), AgentMsg::Ack { version: 1 });
    until("sync", || agents.shared.synced.load(Ordering::Relaxed) == 1);
    (agents, peer)
}

#[test]
fn a_put_undone_by_a_delete_ends_where_the_full_left_it() {
    let (agents, mut peer) = synced();
    let added = endpoint("10.9.0.3");
    let put = Change::EndpointPut {
        network: "wide".into(),
        endpoint: added.clone(),
    };
    let del = Change::EndpointDel {
        network: "wide".into(),
        ip: added.ip,
    };
    for (base, change) in [(1, put), (2, del)] {
        agents.shared.arm(v4(added.ip), 1);
        peer.send(&delta(base, change));
        assert!(agents.shared.wait(Duration::from_secs(5)).is_some());
    }
    assert_eq!(agents.stop().unwrap(), (1, 1));
}

#[test]
fn a_lost_delete_fails_the_check() {
    let (agents, mut peer) = synced();
    let added = endpoint("10.9.0.3");
    agents.shared.arm(v4(added.ip), 1);
    peer.send(&delta(
        1,
        Change::EndpointPut {
            network: "wide".into(),
            endpoint: added,
        },
    ));
    assert!(agents.shared.wait(Duration::from_secs(5)).is_some());
    let e = agents.stop().unwrap_err().to_string();
    assert!(
        e.contains("h0 ends with 2 endpoints where its Full had 1"),
        "{e}"
    );
}

#[test]
fn a_delta_from_another_base_fails_the_agent() {
    let (agents, mut peer) = synced();
    peer.send(&delta(
        7,
        Change::EndpointDel {
            network: "wide".into(),
            ip: "10.9.0.2".parse().unwrap(),
        },
    ));
    until("the failure", || {
        agents.shared.failed.load(Ordering::Relaxed) == 1
    });
    let e = agents.shared.first_error().unwrap();
    assert!(e.contains("a delta from 7 while holding Some(1)"), "{e}");
}
