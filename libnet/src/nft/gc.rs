//! GC of leaked elements: read our table as nft JSON, keep elements whose `knit:<id>` comment
//! names a valid attachment, and delete the rest with the same add+delete pairs as DEL (so a
//! concurrent DEL of one of them cannot fail the batch).

use std::collections::HashSet;

use serde_json::{json, Value};

use super::error::NftError;

/// The attachment id in an element's comment, if it is one of ours.
fn comment_id(elem: &Value) -> Option<&str> {
    let c = elem.get("elem")?.get("comment")?.as_str()?;
    c.strip_prefix("knit:")?.split(' ').next()
}

/// A JSON nft script deleting every element of `listing` (output of `nft -j list table inet knit`)
/// whose comment names an attachment not in `keep`; `None` when nothing leaked.
pub(super) fn leaked_json(
    listing: &str,
    keep: &HashSet<String>,
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
        for el in set
            .get("elem")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            // A map element is [key-with-comment, value]; a set element is the key itself.
            let key = el.as_array().and_then(|a| a.first()).unwrap_or(el);
            let Some(id) = comment_id(key) else { continue };
            if keep.contains(id) {
                continue;
            }
            let target = |elem: Value| json!({"element": {"family": "inet", "table": "knit", "name": name, "elem": [elem]}});
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

    #[test]
    fn finds_leaked_elements_only() {
        let listing = r#"{"nftables":[{"metainfo":{}},
          {"set":{"family":"inet","name":"masq4","table":"knit","elem":[
            {"elem":{"val":"10.244.0.5","comment":"knit:aaaa n/c/eth0"}},
            {"elem":{"val":"10.244.0.6","comment":"knit:bbbb n/d/eth0"}}, "10.244.0.7"]}},
          {"map":{"family":"inet","name":"pm4_any","table":"knit","elem":[
            [{"elem":{"val":{"concat":["tcp",8080]},"comment":"knit:bbbb x"}},
             {"concat":["10.244.0.6",80]}]]}}]}"#;
        let keep: HashSet<String> = ["aaaa".to_string()].into();
        let s = leaked_json(listing, &keep).unwrap().unwrap();
        let v: Value = serde_json::from_str(&s).unwrap();
        let cmds = v["nftables"].as_array().unwrap();
        assert_eq!(cmds.len(), 4, "{s}");
        assert_eq!(cmds[1]["delete"]["element"]["name"], "masq4");
        assert_eq!(
            cmds[3]["delete"]["element"]["elem"][0]["elem"]["val"]["concat"][1],
            8080
        );
        let keep_all: HashSet<String> = ["aaaa".to_string(), "bbbb".to_string()].into();
        assert!(leaked_json(listing, &keep_all).unwrap().is_none());
    }
}
