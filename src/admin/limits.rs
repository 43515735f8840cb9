//! The admin server's limits: how large and how slow a request may be, how long its Redis
//! calls may take, and how much one dead-letter list returns.

use std::time::Duration;

/// Request bodies larger than this are refused with 413 unless set otherwise.
pub const DEFAULT_BODY_LIMIT: usize = 1024 * 1024;
/// A request that takes longer than this is answered 408 unless set otherwise.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// A client that does not finish sending its request headers within this is disconnected.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// An API request whose Redis calls take longer than this is answered 503: Redis is down
/// or stalled. (A submit answered so may still have been written: retry it with a unique
/// key to be safe.)
pub const REDIS_DEADLINE: Duration = Duration::from_secs(5);

/// A dead letter's payload appears in a list only up to this size; a larger one is left
/// out (`"payload": null`, `"payload_truncated": true`, its `payload_bytes`), and
/// `GET .../dlq/{entry}` has it whole.
pub const LIST_PAYLOAD_LIMIT: usize = 16 * 1024;
/// A dead-letter page stops taking entries once its JSON passes this size; `next`
/// continues from there.
pub const LIST_PAGE_BYTES: usize = 1024 * 1024;
