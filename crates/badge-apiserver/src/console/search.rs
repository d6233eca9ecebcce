//! The console's search over a list: `GET /console/search/<list path>?contains=…&names=…`
//! reads the list from the API page by page, as the session's user, and answers one page of
//! the objects whose names match, with its own `continue` token. A page with ten thousand
//! ServiceAccounts in a namespace thus receives only the rows it shows.

use badge_api::Status;
use badge_api::query::QueryParams;
use base64::Engine;
use bytes::Bytes;
use http::{Method, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::response::{self, Body};

/// Where searches live under the console.
pub const SEARCH_PREFIX: &str = "/console/search/";
/// The most objects one answer holds.
pub const MAX_LIMIT: usize = 500;
/// The page size when the request names none.
pub const DEFAULT_LIMIT: usize = 50;
/// The page the search reads from the API at a time.
const READ_PAGE: usize = 500;
/// The most objects one search reads before answering with what it found and a `continue`,
/// so a needle found nowhere costs a bounded amount per request.
const MAX_READ: usize = 100_000;
/// API list parameters a search passes on.
const PASSED_ON: [&str; 2] = ["labelSelector", "fieldSelector"];

/// Which objects a search keeps, and where it resumes.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SearchRequest {
    /// Lowercased; names containing it match.
    pub contains: String,
    /// When not empty, only these names match.
    pub names: Vec<String>,
    /// At most this many matches per page.
    pub limit: usize,
    /// Where this page starts.
    pub resume: Resume,
    /// `labelSelector=…&fieldSelector=…` as given, re-encoded.
    passed_on: String,
}

/// Where the next page starts: the API's `continue` of the page being read, and how many
/// of that page's objects were already looked at.
#[derive(Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resume {
    #[serde(rename = "c", default, skip_serializing_if = "String::is_empty")]
    /// The API's `continue` of the page being read; "" for the first.
    pub api_continue: String,
    #[serde(rename = "s", default)]
    /// How many of that page's objects were already looked at.
    pub skip: usize,
}

impl Resume {
    fn encode(&self) -> String {
        let text = serde_json::to_vec(self).unwrap_or_default();
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
    }

    fn decode(token: &str) -> Result<Resume, Status> {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .ok_or_else(|| Status::bad_request("the search's continue token is not valid"))
    }
}

impl SearchRequest {
    /// The search a console query string asks for.
    pub fn parse(query: Option<&str>) -> Result<SearchRequest, Status> {
        let params = QueryParams::parse(query);
        let limit = match params.get("limit") {
            None | Some("") => DEFAULT_LIMIT,
            Some(text) => text
                .parse::<usize>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| Status::bad_request(format!("invalid limit {text:?}")))?
                .min(MAX_LIMIT),
        };
        let resume = match params.get("continue") {
            None | Some("") => Resume::default(),
            Some(token) => Resume::decode(token)?,
        };
        let names = params
            .get("names")
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(String::from)
            .collect();
        let passed_on = PASSED_ON
            .iter()
            .filter_map(|key| {
                let value = params.get(key).filter(|v| !v.is_empty())?;
                Some(format!("&{key}={}", utf8_percent_encode(value, NON_ALPHANUMERIC)))
            })
            .collect();
        Ok(SearchRequest {
            contains: params.get("contains").unwrap_or("").trim().to_lowercase(),
            names,
            limit,
            resume,
            passed_on,
        })
    }

    fn matches(&self, object: &Value) -> bool {
        let name = object
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("");
        (self.names.is_empty() || self.names.iter().any(|n| n == name))
            && (self.contains.is_empty() || name.to_lowercase().contains(&self.contains))
    }

    /// The API request for the page `resume` points at.
    fn page_path(&self, list_path: &str, api_continue: &str) -> String {
        let mut path = format!("{list_path}?limit={READ_PAGE}{}", self.passed_on);
        if !api_continue.is_empty() {
            path.push_str("&continue=");
            path.extend(utf8_percent_encode(api_continue, NON_ALPHANUMERIC));
        }
        path
    }
}

/// Runs a search, calling `list` for each API page (a GET of the path it is given, as the
/// session's user). An API refusal is answered as is.
pub async fn search<F, Fut>(
    list_path: &str,
    request: &SearchRequest,
    list: F,
) -> Result<Response<Body>, Status>
where
    F: Fn(http::Request<Full<Bytes>>) -> Fut,
    Fut: std::future::Future<Output = Response<Body>>,
{
    if list_path.contains("/console/") || !list_path.starts_with("/api") {
        return Err(Status::path_not_found());
    }
    let mut found: Vec<Value> = Vec::new();
    let mut resume = Resume {
        api_continue: request.resume.api_continue.clone(),
        skip: request.resume.skip,
    };
    let mut head: Option<Value> = None;
    let mut read = 0;
    loop {
        let api_request = http::Request::builder()
            .method(Method::GET)
            .uri(request.page_path(list_path, &resume.api_continue))
            .header(header::ACCEPT, response::JSON)
            .body(Full::new(Bytes::new()))
            .map_err(|_| Status::bad_request(format!("invalid path {list_path}")))?;
        let answer = list(api_request).await;
        if answer.status() != StatusCode::OK {
            return Ok(answer);
        }
        let bytes = answer
            .into_body()
            .collect()
            .await
            .map(|c| c.to_bytes())
            .map_err(|_| Status::internal("reading a list page"))?;
        let mut page: Value = serde_json::from_slice(&bytes)
            .map_err(|e| Status::internal(format!("reading a list page: {e}")))?;
        let items = match page.get_mut("items").map(Value::take) {
            Some(Value::Array(items)) => items,
            _ => return Err(Status::bad_request(format!("{list_path} is not a list"))),
        };
        let next_api_continue = page
            .pointer("/metadata/continue")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        if head.is_none() {
            head = Some(page);
        }
        let total = items.len();
        for (at, item) in items.into_iter().enumerate().skip(resume.skip) {
            read += 1;
            if !request.matches(&item) {
                continue;
            }
            found.push(item);
            if found.len() == request.limit {
                let next = if at + 1 < total {
                    Some(Resume {
                        api_continue: resume.api_continue,
                        skip: at + 1,
                    })
                } else {
                    (!next_api_continue.is_empty()).then_some(Resume {
                        api_continue: next_api_continue,
                        skip: 0,
                    })
                };
                return Ok(answer_page(head, found, next));
            }
        }
        if next_api_continue.is_empty() {
            return Ok(answer_page(head, found, None));
        }
        resume = Resume {
            api_continue: next_api_continue,
            skip: 0,
        };
        if read >= MAX_READ {
            return Ok(answer_page(head, found, Some(resume)));
        }
    }
}

fn answer_page(head: Option<Value>, items: Vec<Value>, next: Option<Resume>) -> Response<Body> {
    let head = head.unwrap_or_else(|| json!({}));
    let mut metadata = json!({});
    if let Some(rv) = head.pointer("/metadata/resourceVersion") {
        metadata["resourceVersion"] = rv.clone();
    }
    if let Some(next) = next {
        metadata["continue"] = json!(next.encode());
    }
    response::json(
        StatusCode::OK,
        &json!({
            "apiVersion": head.get("apiVersion").cloned().unwrap_or(json!("v1")),
            "kind": head.get("kind").cloned().unwrap_or(json!("List")),
            "metadata": metadata,
            "items": items,
        }),
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_search_request_is_read_from_the_query() {
        let request = SearchRequest::parse(Some(
            "contains=We&names=a,+b&limit=9999&labelSelector=app%3Dweb&watch=1",
        ))
        .unwrap();
        assert_eq!(request.contains, "we");
        assert_eq!(request.names, ["a", "b"]);
        assert_eq!(request.limit, MAX_LIMIT);
        assert_eq!(
            request.page_path("/api/v1/serviceaccounts", "abc=="),
            "/api/v1/serviceaccounts?limit=500&labelSelector=app%3Dweb&continue=abc%3D%3D"
        );
        assert_eq!(SearchRequest::parse(None).unwrap().limit, DEFAULT_LIMIT);
        for bad in ["limit=0", "limit=x", "continue=%%%"] {
            assert_eq!(SearchRequest::parse(Some(bad)).unwrap_err().code, 400, "{bad}");
        }
    }

    #[test]
    fn the_continue_token_round_trips() {
        let resume = Resume {
            api_continue: "eyJ2Ijoi".into(),
            skip: 7,
        };
        assert_eq!(Resume::decode(&resume.encode()).unwrap(), resume);
    }
}
