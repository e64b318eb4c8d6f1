//! GC of leaked elements: read one of our tables as nft JSON, and of the elements whose comment
//! `knit:<id> <network>/...` names the network being collected, delete those whose id is not a
//! valid attachment, with the same add+delete pairs as DEL (so a concurrent DEL of one of them
//! cannot fail the batch). Elements of other networks, and comments too truncated to name their
//! network for sure, are left alone.

use serde_json::{json, Value};

use super::error::NftError;

/// (attachment id, network) from an element's comment, if it is one of ours and complete
/// enough to name its network (network names never contain '/').
fn comment_owner(elem: &Value) -> Option<(&str, &str)> {
    let c = elem.get("elem")?.get("comment")?.as_str()?;
    let (id, rest) = c.strip_prefix("knit:")?.split_once(' ')?;
    let (network, _) = rest.split_once('/')?;
    Some((id, network))
}

/// A JSON nft script deleting every element of `listing` (output of `nft -j list table inet
/// knit` or `... bridge knit`; each set's own family and table are used) whose owner (attachment id, network), read from its comment, `doomed` picks; `None`
/// when there is none. A GC passes "this network, not valid", a DEL without a record "this id".
pub(super) fn sweep_json(
    listing: &str,
    doomed: &dyn Fn(&str, &str) -> bool,
) -> Result<Option<String>, NftError> {
    let doc: Value = serde_json::from_str(listing)
        .map_err(|e| NftError::invalid("nft json listing", e.to_string()))?;
    let mut cmds = Vec::new();
    let objects = doc
        .get("nftables")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for obj in &objects {
        let Some(set) = obj.get("set").or_else(|| obj.get("map")) else {
            continue;
        };
        let name = set.get("name").cloned().unwrap_or(Value::Null);
        let family = set.get("family").cloned().unwrap_or_else(|| json!("inet"));
        let table = set.get("table").cloned().unwrap_or_else(|| json!("knit"));
        for el in set
            .get("elem")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            // A map element is [key-with-comment, value]; a set element is the key itself.
            let key = el.as_array().and_then(|a| a.first()).unwrap_or(el);
            let Some((id, net)) = comment_owner(key) else {
                continue;
            };
            if !doomed(id, net) {
                continue;
            }
            let target = |elem: Value| {
                let e = json!({"family": family, "table": table, "name": name, "elem": [elem]});
                json!({ "element": e })
            };
            cmds.push(json!({ "add": target(el.clone()) }));
            cmds.push(json!({ "delete": target(key.clone()) }));
        }
    }
    if cmds.is_empty() {
        return Ok(None);
    }
    Ok(Some(json!({ "nftables": cmds }).to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn finds_leaked_elements_only() {
        let listing = r#"{"nftables":[{"metainfo":{}},
          {"set":{"family":"inet","name":"masq4","table":"knit","elem":[
            {"elem":{"val":"10.244.0.5","comment":"knit:aaaa n/c/eth0"}},
            {"elem":{"val":"10.244.0.6","comment":"knit:bbbb n/d/eth0"}}, "10.244.0.7",
            {"elem":{"val":"10.244.0.8","comment":"knit:cccc other/d/eth0"}},
            {"elem":{"val":"10.244.0.9","comment":"knit:dddd truncated-net"}}]}},
          {"map":{"family":"inet","name":"pm4_any","table":"knit","elem":[
            [{"elem":{"val":{"concat":["tcp",8080]},"comment":"knit:bbbb n/d/eth0"}},
             {"concat":["10.244.0.6",80]}]]}}]}"#;
        let keep: HashSet<String> = ["aaaa".to_string()].into();
        let s = sweep_json(listing, &|id, net| net == "n" && !keep.contains(id))
            .unwrap()
            .unwrap();
        let v: Value = serde_json::from_str(&s).unwrap();
        let cmds = v["nftables"].as_array().unwrap();
        assert_eq!(cmds.len(), 4, "{s}");
        assert_eq!(cmds[1]["delete"]["element"]["name"], "masq4");
        assert_eq!(
            cmds[3]["delete"]["element"]["elem"][0]["elem"]["val"]["concat"][1],
            8080
        );
        let bridge = r#"{"nftables":[{"set":{"family":"bridge","name":"spoof_ok","table":"knit",
          "elem":[{"elem":{"val":{"concat":["veth1","0a:58:0a:f4:00:05"]},
                   "comment":"knit:bbbb n/d/eth0"}}]}}]}"#;
        let s = sweep_json(bridge, &|id, _| id == "bbbb").unwrap().unwrap();
        let v: Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v["nftables"][1]["delete"]["element"]["family"], "bridge");
        let keep_all: HashSet<String> = ["aaaa".to_string(), "bbbb".to_string()].into();
        assert!(
            sweep_json(listing, &|id, net| net == "n" && !keep_all.contains(id))
                .unwrap()
                .is_none()
        );
    }
}
