//! Names derived from a hash, as the reference plugins derive them
//! (`utils.MustFormatHashWithPrefix`: prefix + hex of sha512, cut to a length), so knit's
//! links and the reference's get the same names for the same network and container.

use sha2::{Digest, Sha512};

/// `prefix` + the hex digest of `to_hash`, cut to `len` characters (the reference's
/// `MustFormatHashWithPrefix`). `len` must exceed the prefix and be at most 128 + prefix.
pub fn hash_name(len: usize, prefix: &str, to_hash: &str) -> String {
    let mut s = String::with_capacity(prefix.len() + 128);
    s.push_str(prefix);
    for b in Sha512::digest(to_hash.as_bytes()) {
        s.push_str(&format!("{b:02x}"));
    }
    s.truncate(len);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_the_reference() {
        // The reference bandwidth plugin named this network+container's ifb so, here.
        assert_eq!(hash_name(15, "bwp", "knt-netctr1"), "bwpe3bc84e16f91");
        // FIPS 180-2 "abc", through the same path.
        assert_eq!(hash_name(19, "x", "abc"), "xddaf35a193617abacc");
    }
}
