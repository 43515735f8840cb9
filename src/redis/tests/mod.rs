//! The storage layer against a real Redis: every operation of [`Store`], one test per part
//! of a job's life, each on a prefix of its own. Replies that do not read as expected must
//! end as a clear error, never a panic.

use fred::prelude::*;
use stevedore_testcontainers::TestRedis;

use super::*;

mod cluster;
mod control;
mod lifecycle;
mod takeover;
use crate::job::{IntoJob, PreparedJob, RawJob};

/// A store on a Redis of its own (kept while the test holds it), and a plain client to
/// look at what the store wrote.
pub(super) async fn store(prefix: &str) -> (Store, Client, TestRedis) {
    let redis = match TestRedis::start().await {
        Ok(r) => r,
        Err(e) => panic!("no Redis for the storage tests: {e}"),
    };
    let url = redis.url().to_string();
    let connector = Connector::new(&url, &TlsFiles::default()).expect("url");
    let store = Store::connect(connector, 1, prefix).await.expect("connect");
    let raw = Builder::from_config(Config::from_url(&url).expect("url"))
        .build()
        .expect("client");
    raw.init().await.expect("init");
    (store, raw, redis)
}

pub(super) fn job(queue: &str) -> PreparedJob {
    RawJob::new("t.job", queue, &("payload", 1))
        .expect("job")
        .prepare()
        .expect("prepared")
}

pub(super) fn write(j: PreparedJob) -> JobWrite {
    JobWrite {
        queue: j.queue,
        priority: j.priority,
        when: None,
        unique: None,
        envelope: j.envelope,
    }
}

/// Enqueues `n` ready jobs on `queue` and returns their ids.
pub(super) async fn enqueue(s: &Store, queue: &str, n: usize) -> Vec<String> {
    let writes = (0..n).map(|_| write(job(queue))).collect();
    s.enqueue_batch(vec![queue.into()], writes, 60_000)
        .await
        .expect("enqueue")
        .into_iter()
        .map(super::Written::into_pair)
        .map(|(id, written)| {
            assert!(written);
            id
        })
        .collect()
}

/// Reads everything waiting on `queue` as `consumer`: (stream, entry id, fields).
pub(super) async fn fetch(s: &Store, queue: &str, consumer: &str) -> Vec<(String, String, Fields)> {
    let reader = s.reader(consumer).await.expect("reader");
    let streams = s.keys().streams(queue);
    reader.ensure_groups(&streams).await.expect("groups");
    let mut out = Vec::new();
    for (stream, reply) in streams.iter().zip(
        reader
            .read_ready(&streams, [100; 3], &Default::default())
            .await
            .expect("read"),
    ) {
        for (id, fields) in reply.expect("stream read") {
            out.push((stream.clone(), id, fields.expect("fields")));
        }
    }
    reader.close().await;
    out
}
