//! The lifecycle on fakes: a world of named objects that the fake source, driver and filters
//! make and remove, with a failure injectable at every step (and in every undo).

use std::collections::BTreeSet;
use std::sync::Mutex;

use super::*;
use crate::driver::LinkRef;

#[derive(Debug, Clone, thiserror::Error)]
#[error("{what}: fake failure ({kind})")]
struct FakeErr {
    what: String,
    kind: Kind,
}

impl HasKind for FakeErr {
    fn kind(&self) -> Kind {
        self.kind
    }
}

/// Objects that exist, and where failures are injected (by object name).
#[derive(Default)]
struct World {
    objects: BTreeSet<String>,
    /// Making this object fails (nothing made).
    fail_make: Option<String>,
    /// Removing this object fails (it stays).
    fail_remove: Option<String>,
}

impl World {
    fn make(&mut self, what: &str) -> Result<(), FakeErr> {
        if self.fail_make.as_deref() == Some(what) {
            return Err(FakeErr {
                what: what.into(),
                kind: Kind::Busy,
            });
        }
        self.objects.insert(what.into());
        Ok(())
    }

    fn remove(&mut self, what: &str) -> Result<(), FakeErr> {
        if self.fail_remove.as_deref() == Some(what) {
            return Err(FakeErr {
                what: what.into(),
                kind: Kind::Busy,
            });
        }
        match self.objects.remove(what) {
            true => Ok(()),
            false => Err(FakeErr {
                what: what.into(),
                kind: Kind::NotFound,
            }),
        }
    }
}

struct Source<'w>(&'w Mutex<World>);

impl AddressSource for Source<'_> {
    fn allocate(&mut self, _: &Request<'_>) -> Result<Addressing, BoxError> {
        self.0.lock().unwrap().make("address").map_err(boxed)?;
        Ok(Addressing {
            ips: vec![IpConf {
                addr: "10.9.0.2/24".parse().unwrap(),
                gateway: "10.9.0.1".parse().ok(),
            }],
            routes: Vec::new(),
        })
    }
    fn release(&mut self, _: &Request<'_>) -> Result<(), BoxError> {
        match self.0.lock().unwrap().remove("address") {
            Err(e) if e.kind == Kind::NotFound => Ok(()),
            r => r.map_err(boxed),
        }
    }
}

/// Makes a bridge, a veth pair and the container's configuration, in that order.
struct FakeDriver<'w>(&'w Mutex<World>);

const DRIVER_OBJECTS: [&str; 3] = ["bridge", "veth", "container addresses"];

impl Driver for FakeDriver<'_> {
    fn attach<'u>(&'u self, ep: &Endpoint<'_>, undo: &mut Undo<'u>) -> Result<Wired, DriverError> {
        assert_eq!(ep.ips.len(), 1, "the driver gets the allocated addresses");
        for what in DRIVER_OBJECTS {
            self.0.lock().unwrap().make(what).map_err(driver_err)?;
            let w = self.0;
            undo.push(what, move || w.lock().unwrap().remove(what));
        }
        Ok(Wired {
            bridge: None,
            host: Some(link("veth0")),
            container: link("eth0"),
        })
    }

    fn detach(&self, _: &str, _: &str, _: Option<&NetNs>) -> Result<(), DriverError> {
        let mut w = self.0.lock().unwrap();
        let mut first = None;
        for what in DRIVER_OBJECTS.iter().rev() {
            match w.remove(what) {
                Err(e) if e.kind != Kind::NotFound => {
                    first.get_or_insert(driver_err(e));
                }
                _ => {}
            }
        }
        first.map_or(Ok(()), Err)
    }
}

/// A busy object, as the kernel says it.
fn driver_err(e: FakeErr) -> DriverError {
    assert_eq!(e.kind, Kind::Busy);
    DriverError::Netlink(crate::netlink::NetlinkError::Kernel {
        op: "fake",
        object: e.what,
        errno: libc::EBUSY,
        ext: None,
    })
}

fn link(name: &str) -> LinkRef {
    LinkRef {
        name: name.into(),
        mac: "02:00:00:00:00:01".into(),
    }
}

struct FakeFilter<'w>(&'w Mutex<World>, &'static str);

impl Filter for FakeFilter<'_> {
    fn name(&self) -> &'static str {
        self.1
    }
    fn ensure(&self, _: &Request<'_>, a: &Addressing, w: &Wired) -> Result<(), BoxError> {
        assert_eq!((a.ips.len(), w.container.name.as_str()), (1, "eth0"));
        self.0.lock().unwrap().make(self.1).map_err(boxed)
    }
    fn del(&self, _: &Request<'_>) -> Result<(), BoxError> {
        match self.0.lock().unwrap().remove(self.1) {
            Err(e) if e.kind == Kind::NotFound => Ok(()),
            r => r.map_err(boxed),
        }
    }
}

const ALL: [&str; 6] = [
    "address",
    "bridge",
    "veth",
    "container addresses",
    "ipMasq",
    "macspoofchk",
];

fn run_attach(w: &Mutex<World>) -> Result<Attached, EndpointError> {
    let ns = NetNs::current().unwrap();
    let req = Request {
        network: "n",
        container_id: "c1",
        ifname: "eth0",
        netns: Some(&ns),
        mac: None,
    };
    let (masq, spoof) = (FakeFilter(w, "ipMasq"), FakeFilter(w, "macspoofchk"));
    attach(&req, &mut Source(w), &FakeDriver(w), &[&masq, &spoof])
}

fn run_detach(w: &Mutex<World>) -> Result<(), DetachError> {
    let req = Request {
        network: "n",
        container_id: "c1",
        ifname: "eth0",
        netns: None,
        mac: None,
    };
    let (masq, spoof) = (FakeFilter(w, "ipMasq"), FakeFilter(w, "macspoofchk"));
    detach(&req, &mut Source(w), &FakeDriver(w), &[&masq, &spoof])
}

fn objects(w: &Mutex<World>) -> Vec<String> {
    w.lock().unwrap().objects.iter().cloned().collect()
}

#[test]
fn attach_makes_everything_and_detach_removes_it_twice_over() {
    let w = Mutex::new(World::default());
    let a = run_attach(&w).unwrap();
    assert_eq!(a.wired.container.name, "eth0");
    assert_eq!(a.addressing.ips[0].addr.to_string(), "10.9.0.2/24");
    let mut all: Vec<String> = ALL.iter().map(|s| s.to_string()).collect();
    all.sort();
    assert_eq!(objects(&w), all);
    run_detach(&w).unwrap();
    assert!(objects(&w).is_empty());
    run_detach(&w).expect("DEL of what is gone is success");
}

#[test]
fn a_failure_at_each_step_leaves_nothing_and_names_the_step() {
    for (i, failing) in ALL.iter().enumerate() {
        let w = Mutex::new(World {
            fail_make: Some(failing.to_string()),
            ..Default::default()
        });
        let e = run_attach(&w).unwrap_err();
        let want = match i {
            0 => Step::Allocate,
            1..=3 => Step::Wire,
            _ => Step::Filter(failing),
        };
        assert_eq!(e.step, want, "{failing}");
        assert_eq!(e.kind(), Kind::Busy, "{failing}: the cause's kind is kept");
        assert!(e.to_string().contains(failing), "{failing}: {e}");
        assert!(e.undo_failures.is_empty(), "{failing}: {e}");
        assert!(objects(&w).is_empty(), "{failing}: left {:?}", objects(&w));
    }
}

#[test]
fn an_undo_that_fails_is_reported_with_its_object() {
    let w = Mutex::new(World {
        fail_make: Some("macspoofchk".into()),
        fail_remove: Some("veth".into()),
        ..Default::default()
    });
    let e = run_attach(&w).unwrap_err();
    assert_eq!(e.step, Step::Filter("macspoofchk"));
    assert_eq!(e.undo_failures.len(), 1, "{e}");
    assert_eq!(e.undo_failures[0].what, "veth");
    assert!(
        e.to_string()
            .contains("rolling back, could not remove veth"),
        "{e}"
    );
    // Every other undo still ran.
    assert_eq!(objects(&w), vec!["veth".to_string()]);
}

#[test]
fn detach_tries_everything_and_returns_every_failure_bookkeeping_first() {
    let w = Mutex::new(World::default());
    run_attach(&w).unwrap();
    w.lock().unwrap().fail_remove = Some("ipMasq".into());
    let e = run_detach(&w).unwrap_err();
    assert_eq!(e.errors.len(), 1);
    assert_eq!(e.errors[0].step, Step::Filter("ipMasq"));
    assert_eq!(objects(&w), vec!["ipMasq".to_string()]);

    let w = Mutex::new(World::default());
    run_attach(&w).unwrap();
    w.lock().unwrap().fail_remove = Some("veth".into());
    let e = run_detach(&w).unwrap_err();
    assert_eq!(e.errors[0].step, Step::Unwire);
    assert_eq!(objects(&w), vec!["veth".to_string()]);
}

#[test]
fn the_front_gets_its_own_error_back() {
    let w = Mutex::new(World {
        fail_make: Some("address".into()),
        ..Default::default()
    });
    let e = run_attach(&w).unwrap_err();
    let cause = e.cause::<FakeErr>().expect("the source's own type");
    assert_eq!(cause.what, "address");
    assert!(e.cause::<DriverError>().is_none());
}

#[test]
fn attach_without_a_namespace_is_refused_before_anything_is_made() {
    let w = Mutex::new(World::default());
    let req = Request {
        network: "n",
        container_id: "c1",
        ifname: "eth0",
        netns: None,
        mac: None,
    };
    let e = attach(&req, &mut Source(&w), &FakeDriver(&w), &[]).unwrap_err();
    assert_eq!((e.step, e.kind()), (Step::Netns, Kind::Invalid));
    assert!(objects(&w).is_empty());
}
