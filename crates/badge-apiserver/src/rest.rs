//! The generic REST handler: one implementation of every verb for every stored resource,
//! driven by the resource table (`endpoints/handlers` upstream).

use std::sync::Arc;

use badge_api::decode::{self, FieldValidation, MediaType};
use badge_api::patch::{self, PatchType};
use badge_api::request_info::RequestInfo;
use badge_api::resources::{self, Resource};
use badge_api::selectors::{FieldSelector, FieldTerm, LabelSelector};
use badge_api::{Status, meta};
use badge_registry::strategy::{self, Admission, Deletion};
use badge_registry::{DeleteOptions, DeleteOutcome, Filter, WriteOptions, admission};
use bytes::Bytes;
use http::{Response, StatusCode};
use serde_json::{Value, json};

use crate::ApiServer;
use crate::negotiate::{self, Output, PartialObjectMetadata, Target};
use crate::params::Query;
use crate::response::{self, Body};
use crate::table::{self, IncludeObject};

/// What a request handler gets besides the server.
pub struct Call<'a> {
    /// The request, as its path says.
    pub info: &'a RequestInfo,
    /// The resource the path names.
    pub resource: &'static Resource,
    /// The query parameters.
    pub query: Query,
    /// The `Accept` header.
    pub accept: &'a str,
    /// The `Content-Type` header.
    pub content_type: &'a str,
    /// The request body.
    pub body: Bytes,
    /// Who is asking (after impersonation).
    pub user: badge_auth::UserInfo,
}

impl Call<'_> {
    /// What the response becomes. Upstream negotiates before anything else: a write whose
    /// answer no Accept clause allows is refused before it happens.
    pub(crate) fn output(&self) -> Result<Output, Status> {
        negotiate::output(self.accept)
    }

    fn write_options(&self) -> Result<WriteOptions, Status> {
        Ok(WriteOptions {
            dry_run: self.query.dry_run()?,
        })
    }

    fn field_validation(&self) -> Result<FieldValidation, Status> {
        FieldValidation::parse(self.query.get("fieldValidation"))
    }

    /// Parses the body as an object of `resource`.
    fn decode_body(&self) -> Result<decode::Decoded, Status> {
        let media = decode::media_type(self.content_type)
            .ok_or_else(|| Status::unsupported_media_type(self.content_type))?;
        let (value, duplicates) = decode::parse_body(media, &self.body)?;
        decode::decode_for(self.resource, value, &duplicates, self.field_validation()?)
    }

    /// The selectors of a list or watch. A request that names an object (a named watch
    /// path, or a `metadata.name` field selector that request info took as the name) was
    /// authorized for that name alone, so it selects that name and nothing else, as
    /// upstream's `ListResource` does.
    pub fn filter(&self) -> Result<Filter, Status> {
        let labels = LabelSelector::parse(self.query.get("labelSelector").unwrap_or(""))
            .map_err(|e| Status::bad_request(e.to_string()))?;
        let mut fields = FieldSelector::parse(self.query.get("fieldSelector").unwrap_or(""))
            .map_err(|e| Status::bad_request(format!("invalid field selector: {e}")))?;
        let name = &self.info.name;
        if !name.is_empty() {
            match fields.required_value("metadata.name") {
                Some(selected) if selected == name => {}
                None if fields.is_empty() => {}
                _ => {
                    return Err(Status::bad_request(
                        "fieldSelector metadata.name doesn't match requested name",
                    ));
                }
            }
            // Added even when the selector already requires it: every term must hold, so
            // nothing but the authorized name can match.
            fields.terms.push(FieldTerm {
                field: "metadata.name".into(),
                value: name.clone(),
                negated: false,
            });
        }
        Ok(Filter { labels, fields })
    }
}

/// Renders one object in the negotiated form: itself, a one-row Table, or its metadata.
fn object_response(
    call: &Call<'_>,
    output: Output,
    code: StatusCode,
    object: &Value,
    warnings: &[String],
) -> Response<Body> {
    let mut response = match output.target {
        Target::Table => {
            let t = table::table(
                call.resource,
                [object],
                json!({"resourceVersion": meta::resource_version(object)}),
                true,
                IncludeObject::parse(call.query.get("includeObject")),
            );
            match serde_json::to_vec(&t) {
                Ok(bytes) => response::json_bytes(code, response::TABLE_JSON, bytes),
                Err(e) => response::status(&Status::internal(e.to_string())),
            }
        }
        Target::Metadata(version) => response::json(code, &PartialObjectMetadata::of(object, version)),
        Target::MetadataList(_) => response::status(&negotiate::metadata_list_of_object(call.resource)),
        Target::Object => response::json(code, object),
    };
    response::add_warnings(&mut response, warnings);
    response
}

/// Renders a list in the negotiated form: itself, a Table, or its items' metadata.
fn list_response(
    call: &Call<'_>,
    output: Output,
    list_meta: Value,
    items: Vec<&Value>,
) -> Result<Response<Body>, Status> {
    // Serialized from borrowed items: a `json!` list would first copy every object.
    #[derive(serde::Serialize)]
    struct List<K, V, I> {
        kind: K,
        #[serde(rename = "apiVersion")]
        api_version: V,
        metadata: Value,
        items: I,
    }
    match output.target {
        Target::Table => {
            let t = table::table(
                call.resource,
                items,
                list_meta,
                true,
                IncludeObject::parse(call.query.get("includeObject")),
            );
            let bytes = serde_json::to_vec(&t).map_err(|e| Status::internal(e.to_string()))?;
            Ok(response::json_bytes(StatusCode::OK, response::TABLE_JSON, bytes))
        }
        Target::Metadata(_) => Err(negotiate::metadata_of_list(call.resource)),
        Target::MetadataList(version) => {
            let partial: Vec<_> = items
                .into_iter()
                .map(|o| PartialObjectMetadata::of(o, version))
                .collect();
            let list = List {
                kind: "PartialObjectMetadataList",
                api_version: version.api_version(),
                metadata: list_meta,
                // Upstream builds this list afresh: without items it is `null`, not `[]`.
                items: (!partial.is_empty()).then_some(partial),
            };
            Ok(response::json(StatusCode::OK, &list))
        }
        Target::Object => {
            let list = List {
                kind: call.resource.list_kind(),
                api_version: call.resource.api_version(),
                metadata: list_meta,
                items,
            };
            Ok(response::json(StatusCode::OK, &list))
        }
    }
}

/// Makes the new state of a stored object from its current state.
type Produce<'a> = Box<dyn FnMut(&Value) -> Result<decode::Decoded, Status> + Send + 'a>;

/// How a write makes the object it stores.
enum Change<'a> {
    /// A new object, decoded for the resource.
    Create(decode::Decoded),
    /// The new state of a stored object, made from its current state on each attempt of
    /// the compare-and-swap.
    Update(Produce<'a>),
}

/// Fills what the server sets from the requesting user on create: a
/// CertificateSigningRequest's requestor (`spec.username`, `uid`, `groups`, `extra`).
fn set_requestor(user: &badge_auth::UserInfo, object: &mut Value) {
    let extra = serde_json::to_value(&user.extra).unwrap_or_else(|_| json!({}));
    badge_registry::csr::set_requestor(object, &user.name, &user.uid, &user.groups, &extra);
}

/// Who records the fields a write changed.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Fields {
    /// The request's field manager takes what changed.
    Track,
    /// Server-side apply has recorded its manager's fields itself.
    Applied,
}

impl ApiServer {
    /// Runs ServiceAccount admission on a pod being created in `namespace`.
    async fn admit_pod(&self, namespace: &str, pod: &mut Value) -> Result<Vec<String>, Status> {
        if let Some(meta) = pod.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.insert("namespace".into(), json!(namespace));
        }
        let name = admission::service_account_name(pod);
        let service_account = match self
            .registry
            .get(
                resources::SERVICEACCOUNTS,
                namespace,
                &name,
                badge_registry::ReadFrom::Latest,
            )
            .await
        {
            Ok(found) => Some(found),
            Err(s) if s.is_not_found() => None,
            Err(s) => return Err(s),
        };
        admission::admit_pod(
            pod,
            service_account.as_deref(),
            namespace,
            &badge_registry::registry::random_suffix(),
        )
    }

    pub(crate) async fn get(&self, call: &Call<'_>) -> Result<Response<Body>, Status> {
        let output = call.output()?;
        let read = call.query.read_from()?;
        let object = self
            .registry
            .get(call.resource, &call.info.namespace, &call.info.name, read)
            .await?;
        Ok(object_response(call, output, StatusCode::OK, &object, &[]))
    }

    pub(crate) async fn list(&self, call: &Call<'_>) -> Result<Response<Body>, Status> {
        let output = call.output()?;
        let read = call.query.read_from()?;
        let filter = call.filter()?;
        let page = self
            .registry
            .list(
                call.resource,
                &call.info.namespace,
                &filter,
                read,
                call.query.limit()?,
                call.query.get("continue"),
            )
            .await?;
        let mut list_meta = json!({"resourceVersion": page.revision.to_string()});
        if let Some(token) = &page.continue_token {
            list_meta["continue"] = json!(token);
        }
        if let Some(remaining) = page.remaining {
            list_meta["remainingItemCount"] = json!(remaining);
        }
        list_response(
            call,
            output,
            list_meta,
            page.items.iter().map(|o| o.as_ref()).collect(),
        )
    }

    pub(crate) async fn create(&self, call: &Call<'_>) -> Result<Response<Body>, Status> {
        let output = call.output()?;
        let decoded = call.decode_body()?;
        self.write(call, output, Change::Create(decoded), Fields::Track)
            .await
    }

    pub(crate) async fn update(&self, call: &Call<'_>) -> Result<Response<Body>, Status> {
        let output = call.output()?;
        let given = call.decode_body()?;
        let produce = move |_: &Value| {
            Ok(decode::Decoded {
                object: given.object.clone(),
                warnings: given.warnings.clone(),
            })
        };
        self.write(call, output, Change::Update(Box::new(produce)), Fields::Track)
            .await
    }

    pub(crate) async fn patch(&self, call: &Call<'_>) -> Result<Response<Body>, Status> {
        let output = call.output()?;
        let patch_type = PatchType::from_content_type(call.content_type)
            .ok_or_else(|| patch::unsupported_patch_type(call.content_type))?;
        if patch_type == PatchType::Apply {
            return self.server_side_apply(call, output).await;
        }
        let validation = call.field_validation()?;
        let resource = call.resource;
        let produce = move |current: &Value| {
            let patched = patch::apply_patch(patch_type, current, &call.body, resource.kind)?;
            decode::decode_for(resource, patched, &[], validation)
        };
        self.write(call, output, Change::Update(Box::new(produce)), Fields::Track)
            .await
    }

    /// The one write: admission, RBAC's escalation checks and the strategy's warnings, then
    /// the registry (which applies the strategy's defaults and validation), then waiting
    /// until the write takes effect where it must. Create, update, patch and apply differ
    /// only in how they make the object.
    async fn write(
        &self,
        call: &Call<'_>,
        output: Output,
        change: Change<'_>,
        fields: Fields,
    ) -> Result<Response<Body>, Status> {
        let resource = call.resource;
        let namespace = &call.info.namespace;
        let options = call.write_options()?;
        let rules = strategy::of(resource);
        let (code, object, warnings) = match change {
            Change::Create(mut decoded) => {
                self.check_rbac_write(&call.user, resource, namespace, &decoded.object, None)?;
                match rules.admission {
                    Admission::ServiceAccount => decoded
                        .warnings
                        .extend(self.admit_pod(namespace, &mut decoded.object).await?),
                    Admission::CertificateSigning => {
                        self.admit_certificate_request(&call.user, resource, "", &decoded.object, None)?;
                        set_requestor(&call.user, &mut decoded.object);
                    }
                    Admission::None => {}
                }
                decoded.warnings.extend((rules.warnings)(&decoded.object, None));
                if fields == Fields::Track {
                    Self::track_fields(call, None, &mut decoded.object);
                }
                let object = self
                    .registry
                    .create(resource, namespace, decoded.object, &options)
                    .await?;
                (StatusCode::CREATED, object, decoded.warnings)
            }
            Change::Update(mut produce) => {
                let gr = resource.group_resource();
                let name = &call.info.name;
                let mut warnings = Vec::new();
                let object = self
                    .registry
                    .update(
                        resource,
                        namespace,
                        name,
                        &call.info.subresource,
                        &options,
                        |current| {
                            let decoded = produce(current)?;
                            let wanted = meta::resource_version(&decoded.object);
                            if !wanted.is_empty() && wanted != meta::resource_version(current) {
                                return Err(Status::conflict(gr, name, Status::OPTIMISTIC_LOCK_MESSAGE));
                            }
                            self.check_rbac_write(
                                &call.user,
                                resource,
                                namespace,
                                &decoded.object,
                                Some(current),
                            )?;
                            if rules.admission == Admission::CertificateSigning {
                                self.admit_certificate_request(
                                    &call.user,
                                    resource,
                                    &call.info.subresource,
                                    &decoded.object,
                                    Some(current),
                                )?;
                            }
                            warnings = decoded.warnings;
                            warnings.extend((rules.warnings)(&decoded.object, Some(current)));
                            let mut updated = decoded.object;
                            if fields == Fields::Track {
                                Self::track_fields(call, Some(current), &mut updated);
                            }
                            Ok(updated)
                        },
                    )
                    .await?;
                (StatusCode::OK, object, warnings)
            }
        };
        self.settle_rbac_write(resource, &object).await;
        Ok(object_response(call, output, code, &object, &warnings))
    }

    fn delete_options(call: &Call<'_>) -> Result<DeleteOptions, Status> {
        let mut options = DeleteOptions {
            dry_run: call.query.dry_run()?,
            ..Default::default()
        };
        if !call.body.is_empty() {
            let media = decode::media_type(call.content_type).unwrap_or(MediaType::Json);
            let (body, _) = decode::parse_body(media, &call.body)?;
            if let Some(dry) = body.get("dryRun").and_then(Value::as_array) {
                for v in dry {
                    match v.as_str() {
                        Some("All") => options.dry_run = true,
                        other => {
                            return Err(Status::bad_request(format!(
                                "Invalid dryRun value: {}; supported values: All",
                                other.unwrap_or("")
                            )));
                        }
                    }
                }
            }
            if let Some(grace) = body.get("gracePeriodSeconds").filter(|g| !g.is_null()) {
                options.grace_period_seconds =
                    Some(grace.as_i64().ok_or_else(|| {
                        Status::bad_request(format!("invalid gracePeriodSeconds: {grace}"))
                    })?);
            }
            if let Some(pre) = body.get("preconditions") {
                options.precondition_uid = pre.get("uid").and_then(Value::as_str).map(String::from);
                options.precondition_resource_version = pre
                    .get("resourceVersion")
                    .and_then(Value::as_str)
                    .map(String::from);
            }
        } else if let Some(grace) = call.query.get("gracePeriodSeconds").filter(|g| !g.is_empty()) {
            options.grace_period_seconds = Some(
                grace
                    .parse()
                    .map_err(|_| Status::bad_request(format!("invalid gracePeriodSeconds: {grace}")))?,
            );
        }
        Ok(options)
    }

    pub(crate) async fn delete(&self, call: &Call<'_>) -> Result<Response<Body>, Status> {
        let output = call.output()?;
        let options = Self::delete_options(call)?;
        if call.resource.is(resources::PODS)
            && let Some(node) = crate::node::node_name(&call.user)
        {
            crate::node::admit_node_pod_delete(&self.registry, node, &call.info.namespace, &call.info.name)
                .await?;
        }
        let outcome = self
            .registry
            .delete(call.resource, &call.info.namespace, &call.info.name, &options)
            .await?;
        Ok(match outcome {
            DeleteOutcome::Pending(object) => object_response(call, output, StatusCode::OK, &object, &[]),
            // Upstream's graceful stores answer with the object, like a pending delete.
            DeleteOutcome::Deleted(object) if strategy::of(call.resource).deletion == Deletion::Graceful => {
                object_response(call, output, StatusCode::OK, &object, &[])
            }
            DeleteOutcome::Deleted(object) => response::status(&Status::success(
                call.resource.group_resource(),
                &call.info.name,
                meta::uid(&object),
            )),
        })
    }

    pub(crate) async fn delete_collection(&self, call: &Call<'_>) -> Result<Response<Body>, Status> {
        let output = call.output()?;
        let options = Self::delete_options(call)?;
        let filter = call.filter()?;
        let page = self
            .registry
            .list(
                call.resource,
                &call.info.namespace,
                &filter,
                badge_registry::ReadFrom::Latest,
                0,
                None,
            )
            .await?;
        let mut deleted = Vec::new();
        for object in page.items {
            let ns = meta::namespace(&object).to_string();
            match self
                .registry
                .delete(call.resource, &ns, meta::name(&object), &options)
                .await
            {
                Ok(DeleteOutcome::Deleted(o)) | Ok(DeleteOutcome::Pending(o)) => deleted.push(o),
                Err(s) if s.is_not_found() => {}
                Err(s) => return Err(s),
            }
        }
        list_response(
            call,
            output,
            json!({"resourceVersion": self.registry.cache().revision().to_string()}),
            deleted.iter().collect(),
        )
    }
}

/// The handlers need the registry; re-exported for the server.
pub type SharedServer = Arc<ApiServer>;

fn now_micro() -> String {
    badge_api::clock::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

impl Call<'_> {
    /// `fieldManager`, when the client named one.
    fn field_manager(&self) -> Option<&str> {
        self.query.get("fieldManager").filter(|m| !m.is_empty())
    }
}

impl ApiServer {
    /// Records the fields a non-apply write changed as its manager's. Without a manager the
    /// server's record stands: a client cannot rewrite `managedFields` by sending them.
    pub(crate) fn track_fields(call: &Call<'_>, old: Option<&Value>, new: &mut Value) {
        let manager = call.field_manager().unwrap_or("");
        badge_api::apply::track_update(old, new, manager, call.resource.kind, &now_micro());
    }

    /// `PATCH` with `application/apply-patch+yaml`: server-side apply, creating the object
    /// when it does not exist.
    async fn server_side_apply(&self, call: &Call<'_>, output: Output) -> Result<Response<Body>, Status> {
        let resource = call.resource;
        let manager = call
            .field_manager()
            .ok_or_else(|| {
                Status::bad_request(
                    "PATCH requests with application/apply-patch+yaml must specify a fieldManager",
                )
            })?
            .to_string();
        if manager.len() > 128 {
            return Err(Status::bad_request(
                "fieldManager: Too long: may not be longer than 128 characters",
            ));
        }
        let force = call.query.flag("force");
        let validation = call.field_validation()?;
        let applied = decode::parse_yaml(&call.body).map_err(Status::bad_request)?;
        if !applied.is_object() {
            return Err(Status::bad_request("the applied configuration must be an object"));
        }
        decode::check_type_meta(&applied, &resource.api_version(), resource.kind)?;
        if applied.get("apiVersion").is_none() || applied.get("kind").is_none() {
            return Err(Status::bad_request(
                "apiVersion and kind must be set in an applied configuration",
            ));
        }
        let given = meta::name(&applied);
        if given != call.info.name {
            return Err(Status::bad_request(format!(
                "the name of the object ({given}) does not match the name on the URL ({})",
                call.info.name
            )));
        }
        let gr = resource.group_resource();
        let to_status = |conflict: badge_api::apply::ApplyConflict| {
            conflict.to_status(resource.group, resource.plural, &call.info.name)
        };
        let existing = match self
            .registry
            .get(
                resource,
                &call.info.namespace,
                &call.info.name,
                badge_registry::ReadFrom::Latest,
            )
            .await
        {
            Ok(o) => Some(o),
            Err(s) if s.is_not_found() => None,
            Err(s) => return Err(s),
        };
        let change = match existing {
            None => {
                let created =
                    badge_api::apply::apply(None, &applied, &manager, force, resource.kind, &now_micro())?
                        .map_err(to_status)?;
                Change::Create(decode::decode_for(resource, created, &[], validation)?)
            }
            Some(_) => Change::Update(Box::new(move |current: &Value| {
                let merged = badge_api::apply::apply(
                    Some(current),
                    &applied,
                    &manager,
                    force,
                    resource.kind,
                    &now_micro(),
                )?
                .map_err(to_status)?;
                decode::decode_for(resource, merged, &[], validation)
            })),
        };
        let creates = matches!(change, Change::Create(_));
        self.write(call, output, change, Fields::Applied)
            .await
            .map_err(|s| {
                if !creates && s.is_not_found() {
                    Status::conflict(gr, &call.info.name, "the object was deleted while being applied")
                } else {
                    s
                }
            })
    }
}
