//! How store failures and revision errors become the Status upstream answers with.

use badge_api::status::{Status, StatusCause, StatusDetails};
use badge_store::Revision;

pub(super) fn too_large_resource_version(requested: Revision, current: Revision) -> Status {
    let mut status = Status::timeout(format!(
        "Too large resource version: {requested}, current: {current}"
    ));
    status.details = Some(StatusDetails {
        causes: vec![StatusCause {
            reason: "ResourceVersionTooLarge".into(),
            message: "Too large resource version".into(),
            field: String::new(),
        }],
        retry_after_seconds: Some(1),
        ..Default::default()
    });
    status
}

/// Maps a store failure to the Status upstream answers with.
pub fn store_error(error: badge_store::Error) -> Status {
    match error {
        badge_store::Error::Compacted { requested, compacted } => {
            Status::resource_expired(format!("too old resource version: {requested} ({compacted})"))
        }
        badge_store::Error::FutureRevision { requested, current } => {
            too_large_resource_version(requested, current)
        }
        badge_store::Error::TooLarge => {
            Status::request_entity_too_large(badge_api::status::MAX_REQUEST_BODY_BYTES)
        }
        badge_store::Error::Unavailable(m) => {
            Status::service_unavailable(format!("storage unavailable: {m}"))
        }
        badge_store::Error::Timeout(m) => Status::timeout(format!("storage timeout: {m}")),
        badge_store::Error::Transform(m) => Status::internal_shown(m),
        // Upstream passes etcd's error through as it is (`ErrorToAPIStatus` on an error that
        // is no Status): 500, reason Unknown, etcd's own text, which tells the operator to
        // compact, defragment and disarm.
        badge_store::Error::NoSpace => {
            let mut status = Status::internal(badge_store::NO_SPACE_MESSAGE);
            status.reason = String::new();
            status.message = badge_store::NO_SPACE_MESSAGE.into();
            status.details = None;
            status
        }
        other => Status::internal(other.to_string()),
    }
}
