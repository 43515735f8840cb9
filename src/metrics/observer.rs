//! [`Metrics`] as an [`Observer`]: job events update the counters and histograms.

use std::time::Duration;

use super::Metrics;
use super::labels::{INVALID_TYPE, QueueAction, QueueLabel, QueueOutcome, QueueTypeReason};
use crate::observe::{
    ControlAction, ControlEvent, DeadJobEvent, EnqueuedEvent, Failure, JobEvent, Observer,
    RefusedEvent, ResolvedEvent,
};

impl Metrics {
    fn control_counter(
        &self,
        queue: &str,
        action: ControlAction,
    ) -> prometheus_client::metrics::counter::Counter {
        self.inner
            .families
            .controlled
            .get_or_create_owned(&QueueAction {
                queue: queue.to_string(),
                action: action.as_str().to_string(),
            })
    }
}

impl Observer for Metrics {
    fn enqueued(&self, job: &EnqueuedEvent<'_>) {
        self.enqueued_counter(job.queue, job.job_type, job.priority)
            .inc();
    }

    fn refused(&self, job: &RefusedEvent<'_>) {
        self.refused_counter(job.queue, job.job_type).inc();
    }

    fn started(&self, job: &JobEvent<'_>) {
        let h = self.handles(job.queue, job.job_type, job.known_type);
        let i = job.priority.index();
        h.started[i].inc();
        h.wait[i].observe(job.waited.as_secs_f64());
        self.inner.families.in_flight.inc();
    }

    fn succeeded(&self, job: &JobEvent<'_>, took: Duration) {
        let h = self.handles(job.queue, job.job_type, job.known_type);
        h.succeeded.inc();
        h.duration.observe(took.as_secs_f64());
        self.inner.families.in_flight.dec();
    }

    fn failed(&self, job: &JobEvent<'_>, failure: &Failure<'_>) {
        let h = self.handles(job.queue, job.job_type, job.known_type);
        h.failed.inc();
        h.duration.observe(failure.took.as_secs_f64());
        self.inner.families.in_flight.dec();
    }

    fn retried(&self, job: &JobEvent<'_>, _delay: Duration, _error: &str) {
        self.handles(job.queue, job.job_type, job.known_type)
            .retried
            .inc();
    }

    fn limited(&self, job: &JobEvent<'_>, _wait: Duration, _limit: &str) {
        self.handles(job.queue, job.job_type, job.known_type)
            .limited
            .inc();
    }

    fn abandoned(&self, _job: &JobEvent<'_>) {
        self.inner.families.in_flight.dec();
    }

    fn cancelled(&self, job: &JobEvent<'_>, _took: Duration) {
        self.inner.families.in_flight.dec();
        self.control_counter(job.queue, ControlAction::Cancelled)
            .inc();
    }

    fn resolved(&self, event: &ResolvedEvent<'_>) {
        self.inner
            .families
            .resolved
            .get_or_create(&QueueOutcome {
                queue: event.queue.to_string(),
                outcome: event.outcome.to_string(),
            })
            .inc();
    }

    fn controlled(&self, event: &ControlEvent<'_>) {
        self.control_counter(event.queue, event.action)
            .inc_by(event.jobs);
    }

    fn dead(&self, job: &DeadJobEvent<'_>) {
        let label = match job.job_type {
            None => INVALID_TYPE.to_string(),
            Some(t) => self.type_label(t, job.known_type),
        };
        self.inner
            .families
            .dead
            .get_or_create(&QueueTypeReason {
                queue: job.queue.to_string(),
                r#type: label,
                reason: job.reason.as_str().to_string(),
            })
            .inc();
    }

    fn reclaimed(&self, queue: &str, entries: u64) {
        self.inner
            .families
            .reclaimed
            .get_or_create(&QueueLabel {
                queue: queue.to_string(),
            })
            .inc_by(entries);
    }

    fn read_failed(&self, queue: &str, _error: &str) {
        self.inner
            .families
            .read_errors
            .get_or_create(&QueueLabel {
                queue: queue.to_string(),
            })
            .inc();
    }

    fn stalled(&self, queue: &str, _for_how_long: Duration, _error: &str) {
        self.inner
            .families
            .stalled
            .get_or_create(&QueueLabel {
                queue: queue.to_string(),
            })
            .set(1);
    }

    fn recovered(&self, queue: &str, _lasted: Duration) {
        self.inner
            .families
            .stalled
            .get_or_create(&QueueLabel {
                queue: queue.to_string(),
            })
            .set(0);
    }
}
