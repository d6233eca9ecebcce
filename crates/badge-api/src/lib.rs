//! badge's wire model, with no I/O: the resource table that drives routing, discovery and
//! RBAC; `Status` errors; request path parsing; selectors; strict decoding of bodies;
//! patches; object metadata helpers.

#![warn(missing_docs)]

pub mod apply;
pub mod clock;
pub mod decode;
pub mod identity;
pub mod meta;
pub mod openapi;
pub mod patch;
#[cfg(test)]
mod proptests;
pub mod protobuf;
pub mod query;
pub mod request_info;
pub mod resources;
pub mod selectors;
pub mod status;
pub mod tokenpolicy;
pub mod validation;

pub use resources::{RESOURCES, Resource};
pub use status::{FieldError, GroupResource, Status};
