//! Element lookups by key (NFT_MSG_GETSETELEM without dump): O(1) whatever the table holds —
//! libnftables' `get element` first dumps every element of every set (about 25 µs per element
//! here). Used by CHECK, and by ensure/del to tell our elements from another attachment's.
//! All lookups of one call share one socket (closing an nf_tables socket can wait for the
//! kernel's deferred destroy work, so we open as few as possible).

use netlink_sys::Socket;

use super::error::NftError;
use super::wire::{
    find, messages, recv_queued, WireElem, NFNL_SUBSYS_NFTABLES, NFTA_DATA_VALUE, NFTA_LIST_ELEM,
    NFTA_SET_ELEM_DATA, NFTA_SET_ELEM_LIST_ELEMENTS, NFTA_SET_ELEM_USERDATA,
    NFTNL_UDATA_SET_ELEM_COMMENT, NFT_MSG_NEWSETELEM, NLMSG_ERROR,
};

/// An element the kernel has.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Found {
    /// Map data (empty for a plain set).
    pub data: Vec<u8>,
    /// Its comment, if any.
    pub comment: Option<String>,
}

impl Found {
    /// The attachment id in a `knit:<id> ...` comment.
    pub fn owner(&self) -> Option<&str> {
        let c = self.comment.as_deref()?;
        c.strip_prefix("knit:")?.split(' ').next()
    }
}

/// The comment in an element's user data (libnftnl TLVs: type u8, len u8, value).
fn comment_of(mut ud: &[u8]) -> Option<String> {
    while ud.len() >= 2 {
        let (ty, len) = (ud[0], ud[1] as usize);
        let value = ud.get(2..2 + len)?;
        if ty == NFTNL_UDATA_SET_ELEM_COMMENT {
            let v = value.strip_suffix(&[0]).unwrap_or(value);
            return Some(String::from_utf8_lossy(v).into_owned());
        }
        ud = &ud[2 + len..];
    }
    None
}

/// The element in a NEWSETELEM answer.
fn parse_answer(body: &[u8]) -> Found {
    let el = body
        .get(4..)
        .and_then(|b| find(b, NFTA_SET_ELEM_LIST_ELEMENTS))
        .and_then(|l| find(l, NFTA_LIST_ELEM))
        .unwrap_or_default();
    Found {
        data: find(el, NFTA_SET_ELEM_DATA)
            .and_then(|d| find(d, NFTA_DATA_VALUE))
            .map(<[u8]>::to_vec)
            .unwrap_or_default(),
        comment: find(el, NFTA_SET_ELEM_USERDATA).and_then(comment_of),
    }
}

fn lookup_one(sock: &Socket, e: &WireElem, seq: u32) -> Result<Option<Found>, NftError> {
    sock.send(&e.get_request(seq), 0)
        .map_err(|err| NftError::apply("lookup", format!("send: {err}")))?;
    let mut found = None;
    loop {
        let Some(buf) = recv_queued(sock, "lookup")? else {
            return Err(NftError::Apply {
                op: "lookup",
                kind: crate::Kind::Internal,
                text: format!("{}: no answer from the kernel", e.set),
            });
        };
        for (ty, _, body) in messages(&buf) {
            if ty == (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWSETELEM {
                found = Some(parse_answer(body));
            } else if ty == NLMSG_ERROR && body.len() >= 4 {
                let errno = -i32::from_ne_bytes([body[0], body[1], body[2], body[3]]);
                return match errno {
                    0 => Ok(found),
                    libc::ENOENT => Ok(None),
                    n => Err(NftError::apply(
                        "lookup",
                        format!("{}: {}", e.set, std::io::Error::from_raw_os_error(n)),
                    )),
                };
            }
        }
    }
}

/// Look each element up in the calling thread's namespace: `None` when absent (or no table).
pub fn lookup(elems: &[WireElem]) -> Result<Vec<Option<Found>>, NftError> {
    if elems.is_empty() {
        return Ok(Vec::new());
    }
    let sock = super::wire::take_socket("lookup")?;
    let found = elems
        .iter()
        .zip(1..)
        .map(|(e, seq)| lookup_one(&sock, e, seq))
        .collect();
    super::wire::close(sock);
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_comment_tlv() {
        let mut ud = vec![1, 1, 9, NFTNL_UDATA_SET_ELEM_COMMENT, 8];
        ud.extend_from_slice(b"knit:ab\0");
        let f = Found {
            data: vec![],
            comment: comment_of(&ud),
        };
        assert_eq!(f.comment.as_deref(), Some("knit:ab"));
        assert_eq!(f.owner(), Some("ab"));
        assert_eq!(comment_of(&[0, 200, 1]), None);
    }
}
