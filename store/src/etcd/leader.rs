//! Where the agents find the controller: `P/controller/leader` holds the leading replica's
//! address (`IP:PORT`), written by the controller under its election lease (so it vanishes
//! with a dead leader). Agents read it on start, after a lost stream and on `NotLeader`.

use super::{AsyncEtcdStore, EtcdStore, Get};
use crate::error::Error;

impl super::Keys {
    pub(crate) fn controller_leader(&self) -> String {
        format!("{}/controller/leader", self.prefix)
    }
}

impl AsyncEtcdStore {
    /// The leading controller's address, if a controller leads now.
    pub async fn controller_leader(&self) -> Result<Option<String>, Error> {
        let r = self
            .read(
                "read controller leader",
                vec![Get::Key(self.keys.controller_leader())],
            )
            .await?;
        Ok(r.one(0)
            .and_then(|kv| std::str::from_utf8(kv.value()).ok())
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty()))
    }
}

impl EtcdStore {
    /// [`AsyncEtcdStore::controller_leader`].
    pub fn controller_leader(&self) -> Result<Option<String>, Error> {
        self.run(|s| async move { s.controller_leader().await })
    }
}
