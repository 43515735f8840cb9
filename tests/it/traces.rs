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

/// What a capturing layer saw: each event's message with the `job_id` of the job span it
/// fell in, if any.
#[derive(Clone, Default)]
struct Seen(std::sync::Arc<std::sync::Mutex<Vec<SeenEvent>>>);

/// An event's message, and the `job_id` of the job span it fell in.
type SeenEvent = (String, Option<String>);

struct JobIdOf(String);

#[derive(Default)]
struct Grab {
    name: &'static str,
    value: Option<String>,
}

impl tracing::field::Visit for Grab {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == self.name {
            self.value = Some(format!("{value:?}").trim_matches('"').to_string());
        }
    }
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == self.name {
            self.value = Some(value.to_string());
        }
    }
}

impl<S> tracing_subscriber::Layer<S> for Seen
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let mut grab = Grab {
            name: "job_id",
            ..Grab::default()
        };
        attrs.record(&mut grab);
        if let (Some(v), Some(span)) = (grab.value, ctx.span(id)) {
            span.extensions_mut().insert(JobIdOf(v));
        }
    }

    fn on_event(&self, event: &tracing::Event<'_>, ctx: tracing_subscriber::layer::Context<'_, S>) {
        let mut grab = Grab {
            name: "message",
            ..Grab::default()
        };
        event.record(&mut grab);
        let job = ctx.event_scope(event).and_then(|scope| {
            scope
                .from_root()
                .find(|s| s.name() == "job")
                .and_then(|s| s.extensions().get::<JobIdOf>().map(|j| j.0.clone()))
        });
        if let Ok(mut seen) = self.0.lock() {
            seen.push((grab.value.unwrap_or_default(), job));
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Flaky {
    n: u32,
}

#[job_handler(name = "trace.flaky", queue = "traced2", max_attempts = 2)]
async fn flaky(_f: Flaky, ctx: JobContext) -> Result<(), JobError> {
    tracing::info!("handler speaking");
    if ctx.attempt() == 1 {
        return Err(JobError::retry_after("not yet", Duration::from_millis(50)));
    }
    Ok(())
}

/// The job span covers the handler's events and the worker's own about the attempt (a
/// retry here), each attempt once; the worker's own lines about itself fall outside it.
#[tokio::test]
async fn the_job_span_covers_the_handler_and_the_attempts_outcome() {
    let seen = Seen::default();
    let subscriber = tracing_subscriber::registry().with(seen.clone());
    let _guard = tracing::subscriber::set_default(subscriber);

    let env = TestEnv::start().await;
    let running = support::spawn(
        Worker::builder(env.client.clone())
            .handler(flaky::handler())
            .build()
            .expect("worker"),
    );
    let id = env
        .client
        .enqueue(flaky::job(Flaky { n: 1 }))
        .await
        .expect("enqueue");
    let status = env
        .client
        .wait_for(id.as_str(), Duration::from_secs(10))
        .await
        .expect("status")
        .expect("known job");
    assert_eq!(status.state, stevedore::JobState::Succeeded);
    running.shutdown().await.expect("clean stop");

    let seen = seen.0.lock().expect("seen").clone();
    let in_job = |message: &str| {
        seen.iter()
            .filter(|(m, _)| m == message)
            .map(|(_, job)| job.clone())
            .collect::<Vec<_>>()
    };
    let job = Some(id.to_string());
    assert_eq!(in_job("handler speaking"), vec![job.clone(), job.clone()]);
    assert_eq!(in_job("attempt failed; retrying"), vec![job.clone()]);
    for (message, job) in &seen {
        if message.starts_with("worker st") || message.contains("consuming") {
            assert_eq!(job, &None, "{message} is not a job's");
        }
    }
}
