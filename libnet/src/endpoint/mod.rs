//! The endpoint lifecycle: the one place where an endpoint is attached to a network and
//! detached from it. Every front (the CNI plugins, the `knit` CLI, the Docker plugin, the
//! overlay agent) translates its request into a [`Request`] plus the three effects below and
//! calls [`attach`] or [`detach`]; none of them carries a copy of this flow.
//!
//! # Attach: allocate → wire → filters → result, one undo stack
//! 1. [`AddressSource::allocate`] decides the addresses (libnet's IPAM over a store, a CNI IPAM
//!    plugin, a block leased from etcd); its release is registered at once;
//! 2. the [`Driver`] wires the endpoint into the kernel, pushing the removal of every object onto
//!    the same stack the moment the object exists;
//! 3. each [`Filter`] adds its nftables elements (masquerade, MAC spoof check, port mappings),
//!    its deletion registered as soon as it succeeded.
//!
//! Any failure rolls the stack back newest first and returns an [`EndpointError`] naming the
//! step, keeping the cause (and its [`Kind`]) to the end and listing every undo step that could
//! not be done, with the object it could not remove.
//!
//! # Detach: tolerant, no namespace needed, in parallel where the kernel allows
//! The release of the addresses and the filters' deletions (bookkeeping: files and one
//! nfnetlink batch each) run on a thread beside the driver's link deletion, which waits on the
//! kernel. Everything is attempted whatever fails; what is already gone is success; the
//! container's namespace may be gone (`netns: None`). All failures are returned, bookkeeping
//! first.

#[cfg(test)]
mod tests;

pub mod filters;

use std::fmt;

use crate::driver::{Driver, DriverError, Endpoint, IpConf, RouteConf, Wired};
use crate::error::{HasKind, Kind};
use crate::netns::NetNs;
use crate::nft::Attachment;
use crate::undo::{Undo, UndoFailure};

/// An error any step may return: the front's own error types (a CNI plugin's error object, a
/// store's) travel through the lifecycle unchanged and can be taken back out with
/// [`EndpointError::cause`].
pub trait StepError: std::error::Error + HasKind + Send + Sync + 'static {}
impl<T: std::error::Error + HasKind + Send + Sync + 'static> StepError for T {}

pub type BoxError = Box<dyn StepError>;

/// `result.map_err(boxed)`: any step error as a [`BoxError`].
pub fn boxed<E: StepError>(e: E) -> BoxError {
    Box::new(e)
}

impl HasKind for BoxError {
    fn kind(&self) -> Kind {
        (**self).kind()
    }
}

/// What to attach or detach: the identity every later call (DEL, GC) finds it by.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub network: &'a str,
    pub container_id: &'a str,
    pub ifname: &'a str,
    /// The container's namespace; required to attach, optional to detach (it may be gone).
    pub netns: Option<&'a NetNs>,
    /// A MAC asked for the container's interface.
    pub mac: Option<[u8; 6]>,
}

impl Request<'_> {
    /// The key of the endpoint's nftables elements.
    pub fn attachment(&self) -> Attachment {
        Attachment::new(self.network, self.container_id, self.ifname)
    }
}

/// The addresses decided for an endpoint, and the routes to install with them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Addressing {
    pub ips: Vec<IpConf>,
    pub routes: Vec<RouteConf>,
}

/// Where an endpoint's addresses come from.
pub trait AddressSource: Send {
    /// Decide and reserve the endpoint's addresses. A source that fails after reserving gives
    /// them back itself: the lifecycle registers `release` only once this returned.
    fn allocate(&mut self, req: &Request<'_>) -> Result<Addressing, BoxError>;
    /// Give back every address of the endpoint; none held is success.
    fn release(&mut self, req: &Request<'_>) -> Result<(), BoxError>;
}

/// A layer-2-only endpoint: no addresses.
#[derive(Debug, Default)]
pub struct NoAddresses;

impl AddressSource for NoAddresses {
    fn allocate(&mut self, _: &Request<'_>) -> Result<Addressing, BoxError> {
        Ok(Addressing::default())
    }
    fn release(&mut self, _: &Request<'_>) -> Result<(), BoxError> {
        Ok(())
    }
}

/// Addresses decided by the caller (`knit run --ip`, a test): nothing to reserve or release.
#[derive(Debug, Clone, Default)]
pub struct Fixed(pub Addressing);

impl AddressSource for Fixed {
    fn allocate(&mut self, _: &Request<'_>) -> Result<Addressing, BoxError> {
        Ok(self.0.clone())
    }
    fn release(&mut self, _: &Request<'_>) -> Result<(), BoxError> {
        Ok(())
    }
}

/// Packet filtering of an endpoint (nftables elements keyed by [`Request::attachment`], so
/// that `del` needs nothing but the request).
pub trait Filter: Sync {
    /// The feature's name as users know it (`ipMasq`, `macspoofchk`): errors start with it.
    fn name(&self) -> &'static str;
    fn ensure(&self, req: &Request<'_>, addrs: &Addressing, wired: &Wired) -> Result<(), BoxError>;
    /// Tolerant: no elements is success.
    fn del(&self, req: &Request<'_>) -> Result<(), BoxError>;
}

/// The lifecycle step an error comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The container's namespace was needed and not given.
    Netns,
    Allocate,
    Wire,
    Filter(&'static str),
    Release,
    Unwire,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Netns => f.write_str("the container's network namespace"),
            Step::Allocate => f.write_str("allocating addresses"),
            Step::Wire => f.write_str("wiring the endpoint"),
            Step::Filter(name) => f.write_str(name),
            Step::Release => f.write_str("releasing addresses"),
            Step::Unwire => f.write_str("removing the endpoint's links"),
        }
    }
}

/// A failed step, its cause, and what its rollback could not undo.
#[derive(Debug)]
pub struct EndpointError {
    pub step: Step,
    pub source: BoxError,
    pub undo_failures: Vec<UndoFailure>,
}

impl EndpointError {
    pub fn new(step: Step, source: impl StepError) -> EndpointError {
        EndpointError::boxed(step, Box::new(source))
    }

    pub fn boxed(step: Step, source: BoxError) -> EndpointError {
        EndpointError {
            step,
            source,
            undo_failures: Vec::new(),
        }
    }

    /// The cause as the front's own error type, if it is one (e.g. a CNI error object from an
    /// IPAM plugin, to be passed on unchanged).
    pub fn cause<E: std::error::Error + 'static>(&self) -> Option<&E> {
        let e: &(dyn std::error::Error + 'static) = &*self.source;
        e.downcast_ref::<E>()
    }
}

impl fmt::Display for EndpointError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.step {
            // The cause names its object; the front adds its own context.
            Step::Allocate | Step::Wire => write!(f, "{}", self.source)?,
            step => write!(f, "{step}: {}", self.source)?,
        }
        for u in &self.undo_failures {
            write!(f, "; rolling back, {u}")?;
        }
        Ok(())
    }
}

impl std::error::Error for EndpointError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.source)
    }
}

impl HasKind for EndpointError {
    fn kind(&self) -> Kind {
        self.source.kind()
    }
}

/// Every failure of a detach, bookkeeping first.
#[derive(Debug)]
pub struct DetachError {
    pub errors: Vec<EndpointError>,
}

impl fmt::Display for DetachError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for DetachError {}

impl HasKind for DetachError {
    fn kind(&self) -> Kind {
        self.errors.first().map_or(Kind::Internal, HasKind::kind)
    }
}

/// The attached endpoint: its addresses and links, for the front to render.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attached {
    pub addressing: Addressing,
    pub wired: Wired,
}

#[derive(Debug, thiserror::Error)]
#[error("no network namespace given for container {0}")]
struct NoNetns(String);

impl HasKind for NoNetns {
    fn kind(&self) -> Kind {
        Kind::Invalid
    }
}

/// Attach an endpoint (see the module note). On error nothing of it is left, or the error
/// lists what could not be removed.
pub fn attach(
    req: &Request<'_>,
    source: &mut dyn AddressSource,
    driver: &dyn Driver,
    filters: &[&dyn Filter],
) -> Result<Attached, EndpointError> {
    let netns = req
        .netns
        .ok_or_else(|| EndpointError::new(Step::Netns, NoNetns(req.container_id.to_string())))?;
    let addressing = source
        .allocate(req)
        .map_err(|e| EndpointError::boxed(Step::Allocate, e))?;
    let mut undo = Undo::new();
    let what = format!("addresses of {} {}", req.container_id, req.ifname);
    undo.push(what, || source.release(req));

    let ep = Endpoint {
        container_id: req.container_id,
        ifname: req.ifname,
        netns,
        mac: req.mac,
        ips: addressing.ips.clone(),
        routes: addressing.routes.clone(),
    };
    let wired = match driver.attach(&ep, &mut undo) {
        Ok(w) => w,
        Err(e) => return Err(rolled_back(Step::Wire, Box::new(e), undo)),
    };
    for f in filters {
        if let Err(e) = f.ensure(req, &addressing, &wired) {
            return Err(rolled_back(Step::Filter(f.name()), e, undo));
        }
        undo.push(format!("{} elements", f.name()), move || f.del(req));
    }
    undo.commit();
    Ok(Attached { addressing, wired })
}

fn rolled_back(step: Step, source: BoxError, undo: Undo<'_>) -> EndpointError {
    EndpointError {
        step,
        source,
        undo_failures: undo.rollback(),
    }
}

/// Detach an endpoint (see the module note): tolerant, every step attempted, all failures
/// returned.
pub fn detach(
    req: &Request<'_>,
    source: &mut dyn AddressSource,
    driver: &dyn Driver,
    filters: &[&dyn Filter],
) -> Result<(), DetachError> {
    let bookkeeping = || {
        let mut errors = Vec::new();
        if let Err(e) = source.release(req) {
            errors.push(EndpointError::boxed(Step::Release, e));
        }
        for f in filters.iter().rev() {
            if let Err(e) = f.del(req) {
                errors.push(EndpointError::boxed(Step::Filter(f.name()), e));
            }
        }
        errors
    };
    let (mut errors, unwired) = std::thread::scope(|s| {
        let side = s.spawn(bookkeeping);
        let unwired = driver.detach(req.container_id, req.ifname, req.netns);
        let errors = side.join().unwrap_or_else(|_| {
            vec![EndpointError::new(
                Step::Release,
                DriverError::Invalid("detach: the bookkeeping thread panicked".into()),
            )]
        });
        (errors, unwired)
    });
    match unwired {
        Err(e) if e.kind() != Kind::NotFound => errors.push(EndpointError::new(Step::Unwire, e)),
        _ => {}
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(DetachError { errors })
    }
}
