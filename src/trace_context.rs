//! W3C trace context across the queue: the producer's trace travels in the envelope's
//! `traceparent` field, and the worker's job span continues it.
//!
//! With the cargo feature `opentelemetry`, enqueueing inside a span that OpenTelemetry
//! tracks (a `tracing-opentelemetry` layer is installed) records that span's context, and
//! the worker makes the job span its child, so the trace shows producer and job as one. Jobs
//! can also carry a `traceparent` given by hand ([`Job::traceparent`](crate::Job::traceparent)),
//! e.g. one received over HTTP. Without the feature the field is kept and shown on the job
//! span as the `traceparent` field.

/// Whether `s` is a W3C `traceparent`: `version-traceid-spanid-flags` in lowercase hex
/// (`00-<32>-<16>-<2>`), with a trace id and span id that are not all zeros.
pub(crate) fn is_valid(s: &str) -> bool {
    parse(s).is_some()
}

/// The parts of a valid `traceparent`: trace id, span id, flags.
fn parse(s: &str) -> Option<(&str, &str, u8)> {
    let mut parts = s.split('-');
    let (version, trace, span, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |p: &str, len: usize| {
        p.len() == len
            && p.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let ok = parts.next().is_none()
        && hex(version, 2)
        && version != "ff"
        && hex(trace, 32)
        && hex(span, 16)
        && hex(flags, 2)
        && trace.bytes().any(|b| b != b'0')
        && span.bytes().any(|b| b != b'0');
    ok.then(|| (trace, span, u8::from_str_radix(flags, 16).unwrap_or(0)))
}

#[cfg(feature = "opentelemetry")]
mod otel {
    use opentelemetry::trace::{
        SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId, TraceState,
    };
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;

    /// The `traceparent` of the current span, when OpenTelemetry tracks it.
    pub(crate) fn current() -> Option<String> {
        let cx = tracing::Span::current().context();
        let span = cx.span();
        let sc = span.span_context();
        sc.is_valid().then(|| {
            format!(
                "00-{:032x}-{:016x}-{:02x}",
                sc.trace_id(),
                sc.span_id(),
                sc.trace_flags().to_u8()
            )
        })
    }

    /// Makes `span` a child of the remote span `traceparent` names.
    pub(crate) fn continue_in(span: &tracing::Span, traceparent: &str) {
        let Some((trace, id, flags)) = super::parse(traceparent) else {
            return;
        };
        let (Ok(trace), Ok(id)) = (TraceId::from_hex(trace), SpanId::from_hex(id)) else {
            return;
        };
        let remote = SpanContext::new(
            trace,
            id,
            TraceFlags::new(flags),
            true,
            TraceState::default(),
        );
        let cx = opentelemetry::Context::new().with_remote_span_context(remote);
        if let Err(e) = span.set_parent(cx) {
            tracing::debug!(error = %e, "could not continue the producer's trace");
        }
    }
}

/// The current span's `traceparent` (feature `opentelemetry`; `None` without it).
pub(crate) fn current() -> Option<String> {
    #[cfg(feature = "opentelemetry")]
    {
        otel::current()
    }
    #[cfg(not(feature = "opentelemetry"))]
    {
        None
    }
}

/// Makes the job `span` continue the producer's trace (feature `opentelemetry`; a no-op
/// without it, where the `traceparent` field of the span shows it instead).
pub(crate) fn continue_in(span: &tracing::Span, traceparent: Option<&str>) {
    #[cfg(feature = "opentelemetry")]
    if let Some(tp) = traceparent {
        otel::continue_in(span, tp);
    }
    #[cfg(not(feature = "opentelemetry"))]
    let _ = (span, traceparent);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_only_well_formed_traceparents() {
        assert!(is_valid(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        ));
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        ] {
            assert!(!is_valid(bad), "{bad}");
        }
    }
}
