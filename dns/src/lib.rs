//! knit's service-discovery DNS: the names of endpoints, scoped per network by the requester's
//! address, answered from plain data built from the store ([`records`]) by a handler on
//! hickory-server ([`server`]). Run standalone as `knit dns`.

pub mod fast;
pub mod forward;
pub mod live;
pub mod records;
pub mod server;
pub mod udp;

pub use records::{Outcome, Records, DEFAULT_DOMAIN, DEFAULT_TTL};

/// The records of everything in `st` now.
pub fn load(st: &dyn store::Store, domain: &str, ttl: u32) -> Result<Records, store::Error> {
    let mut all = Vec::new();
    let networks = st.list_networks()?;
    for n in &networks {
        let eps = st.network_endpoints(&n.id)?;
        all.push((n.clone(), eps));
    }
    let mut r = Records::build(domain, ttl, &all);
    r.add_services(&networks, &st.list_services()?);
    Ok(r)
}
