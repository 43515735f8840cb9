//! Integration tests against a real Redis, one binary, a module per topic. Every test gets
//! its own Redis from the test kit (or, with `STEVEDORE_TEST_REDIS_URL`, its own key
//! prefix on a shared one), so tests run in parallel without seeing each other.

/// Shared setup: a Redis per test, raw inspection, waiting with a deadline.
mod support;

/// The admin HTTP API over a socket: enqueue, status, queues, workers, pause, dead letters,
/// and a clear error for every bad request.
mod admin;
/// Operator control over HTTP: cancel, delete, run now, purge, jobs after others, batch
/// status, webhooks.
mod admin_control;
/// The admin server's defenses: cross-site requests, unknown hosts, tokens for reads,
/// loopback-only without a token, bounded lists, JSON errors for bodies too large or slow.
mod admin_security;
/// Priority aging: a low job's wait under a flood of high ones is bounded; without aging
/// it starves.
mod aging;
/// Malformed entries, unknown types, undecodable and oversized payloads go to the DLQ.
mod bad_input;
/// Bounded queues: refusals exact under racing producers, bulk refusals per job, waiting
/// enqueues woken by room notices, capacities shared over partitions.
mod bounded;
/// A Redis Cluster: a primary killed with SIGKILL mid-drain loses no job, and a queue on
/// another primary keeps running meanwhile; what asynchronous replication loses of the
/// enqueues acknowledged just before the kill.
mod cluster;
/// Operator control: cancel (waiting, running, missed message, killed worker, racing the
/// fetch), delete in every state and racing a takeover, retry now, purge with filters.
mod control;
/// The Grafana dashboard and the alert rules against the exporter: every metric they name
/// is exported, and every dashboard query returns data from a real Prometheus.
mod dashboard;
/// The web dashboard in headless Chromium (through chromedriver): totals, submitting and
/// looking up jobs, dead letters shown, replayed and purged, queues paused and resumed;
/// data from Redis always rendered as text.
mod dashboard_ui;
/// Delayed jobs, retry backoff, unknown types waiting for a worker that knows them.
mod delays;
/// Dead letters: count, list with filters and cursors, get, replay (racing too), purge.
mod dlq;
/// Redis killed mid-run: with AOF nothing is lost; without, the audit shows the loss.
mod durability;
/// Handler errors, panics and timeouts: retries, then the DLQ with a reason.
mod failures;
/// The fault suite: Redis paused, a partition (blackhole, reset), operator mistakes,
/// SIGTERM with a short drain deadline, a starved worker; a ledger of every job each.
mod faults;
/// Chains, dependencies and batches: order and results, failure policies, unknown
/// dependencies, parents ending together on two workers, batch callbacks under a kill.
mod flow;
/// Leases, the janitor and poison: long jobs keep their lease, dead workers' jobs run
/// elsewhere, jobs that kill their worker end in the DLQ.
mod leases;
/// Rate limits, fleet-wide: per type over three worker processes, per key, per queue,
/// a downstream's "slow down", changes at runtime, limits that are none.
mod limits;
/// Metrics, job event observers, sampled queue gauges, and the health endpoints.
mod observability;
/// Outages made visible and short: stalls reported and their end, command timeouts, the
/// drain deadline held while Redis does not answer, readiness of a Redis refusing writes.
mod outages;
/// Partitioned queues: placement, per-key order, unique jobs, the count's changes, dead
/// letters merged, pause and admin sums.
mod partitions;
/// Periodic (cron) jobs: each tick once across workers, one catch-up after an outage.
mod periodic;
/// A lost consumer group, lost scripts or a restarted Redis are recovered without a restart
/// of the worker.
mod recovery;
/// Worker replicas as containers share a batch; one killed mid-run loses nothing (runs
/// when `STEVEDORE_TEST_WORKER_IMAGE` names a worker image).
mod replicas;
/// Payloads of many shapes survive enqueue → handler unchanged; enqueue refuses bad input.
mod roundtrip;
/// Thousands of jobs across several workers and processes: each runs once, all acknowledged.
mod scale;
/// Priorities under saturation, and the concurrency bound.
mod scheduling;
/// The failure-handling suite's core cases on Valkey and on a Redis Cluster of three
/// primaries.
mod servers;
/// Graceful shutdown: in-flight jobs finish, fetched-but-unstarted ones stay pending.
mod shutdown;
/// Job status by id through every state, retention, and unique jobs.
mod status;
/// rediss:// against redis-server with TLS: jobs run, a private CA and mutual TLS work,
/// nothing falls back to plain TCP.
mod tls;
/// The job span continues the producer's OpenTelemetry trace through `traceparent`.
mod traces;
/// Data written by the previous version (status hashes, UUID ids) after an upgrade.
mod upgrade;
/// Webhooks: signed deliveries of successes and deaths, scoped, retried on 5xx,
/// dead-lettered when refused or unreachable.
mod webhooks;
