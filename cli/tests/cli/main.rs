//! The `stevedore` binary, run as a process against a real Redis (one per test, from the
//! test kit) under a prefix of its own: what a person or a script sees, exit codes
//! included, and that a refused command leaves Redis as it was.

/// Running the binary, reading its output, and snapshots of the test's keys.
mod support;

/// Bad input of every kind: one line, the right exit code, Redis untouched.
mod bad_input;
/// On a Redis Cluster of three primaries: enqueue, queues, stats and pause through a
/// `redis-cluster://` URL, which `--help` shows.
mod cluster;
/// cancel, delete, retry, purge, batch, webhooks, enqueue --after.
mod control;
/// dlq list, show, replay and purge, and dry runs.
mod dlq;
/// enqueue, queues, stats, job, pause and resume.
mod queues;
/// serve: the API answers, and open non-loopback addresses are refused.
mod serve;
/// TLS: rediss:// with a private CA and a client certificate.
mod tls;
