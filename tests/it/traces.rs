use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
use serde::{Deserialize, Serialize};
use stevedore::{JobContext, JobError, Worker, job_handler};
use tracing_subscriber::layer::SubscriberExt as _;

use crate::support::{self, TestEnv};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Report {
    n: u32,
}

#[job_handler(name = "trace.report", queue = "traced")]
async fn report(_r: Report, ctx: JobContext) -> Result<(), JobError> {
    tracing::info!("building the report");
    support::record(ctx.id(), ());
    Ok(())
}

#[tokio::test]
async fn the_job_span_continues_the_producers_trace() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("it")));
    // A current-thread runtime: the worker's tasks run on this thread, under this subscriber.
    let _guard = tracing::subscriber::set_default(subscriber);

    let env = TestEnv::start().await;
    let running = support::spawn(
        Worker::builder(env.client.clone())
            .handler(report::handler())
            .build()
            .expect("worker"),
    );
    let id = {
        let produce = tracing::info_span!("produce");
        let _entered = produce.enter();
        env.client
            .enqueue(report::job(Report { n: 1 }))
            .await
            .expect("enqueue")
    };
    let status = env
        .client
        .wait_for(id.as_str(), Duration::from_secs(10))
        .await
        .expect("status")
        .expect("known job");
    assert_eq!(status.state, stevedore::JobState::Succeeded);
    running.shutdown().await.expect("clean stop");

    provider.force_flush().expect("flush");
    let spans = exporter.get_finished_spans().expect("spans");
    let produce = spans
        .iter()
        .find(|s| s.name == "produce")
        .expect("the producer's span");
    let job = spans.iter().find(|s| s.name == "job").unwrap_or_else(|| {
        panic!(
            "a job span among {:?}",
            spans.iter().map(|s| &s.name).collect::<Vec<_>>()
        )
    });
    assert_eq!(job.span_context.trace_id(), produce.span_context.trace_id());
    assert_eq!(job.parent_span_id, produce.span_context.span_id());
    let attr = |k: &str| {
        job.attributes
            .iter()
            .find(|kv| kv.key.as_str() == k)
            .map(|kv| kv.value.to_string())
    };
    assert_eq!(attr("job_id").as_deref(), Some(id.as_str()));
    assert_eq!(attr("job_type").as_deref(), Some("trace.report"));
    assert_eq!(attr("queue").as_deref(), Some("traced"));
    assert_eq!(attr("attempt").as_deref(), Some("1"));
}

#[tokio::test]
async fn a_malformed_traceparent_is_refused_at_enqueue() {
    let env = TestEnv::start().await;
    let err = env
        .client
        .enqueue(report::job(Report { n: 2 }).traceparent("00-not-a-trace-01"))
        .await
        .expect_err("refused");
    assert!(err.to_string().contains("traceparent"), "{err}");
    assert_eq!(env.xlen(&env.stream("traced", "normal")).await, 0);
}
