//! Job status records: one hash per job, `<prefix>:{<queue>}:job:<id>`.

use std::collections::HashMap;

use fred::prelude::*;

use super::{Store, fail};

impl Store {
    /// The status fields of job `id` on `queue`; empty when there is none.
    pub(crate) async fn job_status(
        &self,
        queue: &str,
        id: &str,
    ) -> crate::Result<HashMap<String, String>> {
        self.conn()
            .hgetall(self.keys.job(queue, id))
            .await
            .map_err(fail)
    }

    /// The status fields of job `id` in the first of `queues` that has one, in one round
    /// trip; empty when none has.
    pub(crate) async fn find_job_status(
        &self,
        queues: &[String],
        id: &str,
    ) -> crate::Result<HashMap<String, String>> {
        if queues.is_empty() {
            return Ok(HashMap::new());
        }
        let p = self.conn().pipeline();
        for q in queues {
            let _: () = p.hgetall(self.keys.job(q, id)).await.map_err(fail)?;
        }
        let hashes: Vec<HashMap<String, String>> = p.all().await.map_err(fail)?;
        Ok(hashes
            .into_iter()
            .find(|h| !h.is_empty())
            .unwrap_or_default())
    }
}
