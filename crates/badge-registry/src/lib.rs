//! Objects over the store: key layout `/registry/<resource>/<namespace>/<name>`,
//! resourceVersion from the store revision, per-resource strategies, and the watch cache
//! that serves reads and watches.

#![warn(missing_docs)]

pub mod admission;
pub mod bootstraptoken;
pub mod cache;
pub mod csr;
pub mod graceful;
pub mod identity;
mod index;
mod live;
mod packed;
pub mod printers;
pub mod registry;
pub mod strategy;

pub use cache::{CacheEvent, CachedObject, EventType, WatchCache, WatchEnd};
pub use registry::{
    BatchWrite, DeleteOptions, DeleteOutcome, Filter, ListPage, ReadFrom, Registry, SelfWritten,
    SelfWrittenStatus, ServerMetadata, WriteOptions,
};
