//! Query parameters of API requests.

use badge_api::Status;
use badge_api::query::QueryParams;
use badge_registry::ReadFrom;

/// The decoded query string, decoded as request info decodes it (first value wins, as Go's
/// `Query().Get`).
#[derive(Debug, Default)]
pub struct Query(QueryParams);

impl Query {
    /// The parameters of a query string.
    pub fn parse(query: Option<&str>) -> Query {
        Query(QueryParams::parse(query))
    }

    /// The value of `key`, if given.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key)
    }

    /// Whether `key` is `true` or `1`.
    pub fn flag(&self, key: &str) -> bool {
        matches!(self.get(key), Some("true") | Some("1"))
    }

    /// `dryRun`: only `All` is accepted, as upstream.
    pub fn dry_run(&self) -> Result<bool, Status> {
        match self.get("dryRun") {
            None | Some("") => Ok(false),
            Some("All") => Ok(true),
            Some(other) => Err(Status::bad_request(format!(
                "Invalid dryRun value: {other}; supported values: All"
            ))),
        }
    }

    /// `resourceVersion` and `resourceVersionMatch` for get and list.
    pub fn read_from(&self) -> Result<ReadFrom, Status> {
        let rv = self.get("resourceVersion").unwrap_or("");
        let matching = self.get("resourceVersionMatch").unwrap_or("");
        let parse = |s: &str| {
            s.parse::<i64>()
                .ok()
                .filter(|v| *v >= 0)
                .ok_or_else(|| Status::bad_request(format!("invalid resource version: {s}")))
        };
        match (rv, matching) {
            ("", "") => Ok(ReadFrom::Latest),
            ("", m) => Err(Status::bad_request(format!(
                "resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden unless resourceVersion is provided (got {m})"
            ))),
            ("0", "" | "NotOlderThan") => Ok(ReadFrom::Any),
            (v, "" | "NotOlderThan") => Ok(ReadFrom::NotOlderThan(parse(v)?)),
            ("0", "Exact") => Err(Status::bad_request(
                "resourceVersionMatch: Forbidden: resourceVersionMatch \"exact\" is forbidden for resourceVersion \"0\"",
            )),
            (v, "Exact") => Ok(ReadFrom::Exact(parse(v)?)),
            (_, m) => Err(Status::bad_request(format!(
                "resourceVersionMatch: Unsupported value: \"{m}\": supported values: \"Exact\", \"NotOlderThan\", \"\""
            ))),
        }
    }

    /// `limit`: 0 when absent; a bad request when not a number.
    pub fn limit(&self) -> Result<usize, Status> {
        match self.get("limit") {
            None | Some("") => Ok(0),
            Some(v) => v
                .parse::<i64>()
                .map(|n| n.max(0) as usize)
                .map_err(|_| Status::bad_request(format!("invalid limit: {v}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes() {
        let q = Query::parse(Some(
            "labelSelector=app%3Dweb&limit=500&watch=true&fieldSelector=metadata.name%3Dx%2Cb%3Dc",
        ));
        assert_eq!(q.get("labelSelector"), Some("app=web"));
        assert_eq!(q.get("fieldSelector"), Some("metadata.name=x,b=c"));
        assert!(q.flag("watch"));
        assert_eq!(q.limit().ok(), Some(500));
    }

    #[test]
    fn resource_versions() {
        assert_eq!(Query::parse(None).read_from().ok(), Some(ReadFrom::Latest));
        assert_eq!(
            Query::parse(Some("resourceVersion=0")).read_from().ok(),
            Some(ReadFrom::Any)
        );
        assert_eq!(
            Query::parse(Some("resourceVersion=7&resourceVersionMatch=Exact"))
                .read_from()
                .ok(),
            Some(ReadFrom::Exact(7))
        );
        assert!(Query::parse(Some("resourceVersion=x")).read_from().is_err());
        assert!(Query::parse(Some("dryRun=Bogus")).dry_run().is_err());
    }
}
