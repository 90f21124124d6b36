//! The gateway's OpenAPI 3.1 document, served at `/openapi.json`: built from
//! the handlers' `#[utoipa::path]` attributes and the types they read and
//! write, plus what the edge adds to every route (the error replies of
//! timeouts, rate limits, shedding and failures, and the bearer token).

use std::sync::OnceLock;

use axum::http::header;
use utoipa::{
    Modify, OpenApi,
    openapi::{
        self, Ref, RefOr, Response, ResponseBuilder,
        content::Content,
        header::HeaderBuilder,
        path::Operation,
        schema::{ObjectBuilder, Type},
        security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
    },
};

use crate::{
    envelope::EmptyReply,
    routes::{health, note, user},
};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Easy-Note API",
        description = "The public HTTP/JSON API of Easy-Note. Every reply is an envelope \
            `{\"code\", \"message\", \"data\"}`: `code` 0 and `message` \"Success\" on success; on \
            failure one of the contract's codes with a meaningful HTTP status. Note routes need \
            the token of `/v1/user/login` as `Authorization: Bearer …`.",
    ),
    paths(
        user::register,
        user::login,
        user::logout,
        note::create,
        note::query,
        note::fetch,
        note::update,
        note::delete,
        health::ping,
        health::healthz,
        health::readyz,
        document,
    ),
    components(schemas(EmptyReply)),
    tags(
        (name = "user", description = "Accounts and tokens"),
        (name = "note", description = "The caller's notes"),
        (name = "health", description = "Liveness, readiness and this document"),
    ),
    modifiers(&Edge),
)]
struct ApiDoc;

/// What the edge adds to every operation: the bearer scheme, and the error
/// replies any route can give besides its own.
struct Edge;

impl Modify for Edge {
    fn modify(&self, doc: &mut openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
        for item in doc.paths.paths.values_mut() {
            for operation in [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
            ]
            .into_iter()
            .flatten()
            {
                add_edge_responses(operation);
            }
        }
    }
}

fn add_edge_responses(operation: &mut Operation) {
    let has_body = operation.request_body.is_some();
    let has_params = operation.parameters.as_ref().is_some_and(|p| !p.is_empty());
    let secured = operation.security.as_ref().is_some_and(|s| !s.is_empty());
    let mut add = |status: &str, description: &str, retry_after: bool| {
        operation
            .responses
            .responses
            .entry(status.to_owned())
            .or_insert_with(|| error_reply(description, retry_after));
    };
    if has_body || has_params {
        add(
            "400",
            "Wrong parameter: a field, a header or the JSON body breaks a rule (code 10002)",
            false,
        );
    }
    if has_body {
        add(
            "413",
            "The body is over EASYNOTE_BODY_LIMIT (code 10002)",
            false,
        );
    }
    if secured {
        add(
            "401",
            "Missing, expired or forged token (code 10004)",
            false,
        );
    }
    add(
        "408",
        "The request did not arrive within the request timeout (code 10002)",
        false,
    );
    add(
        "429",
        "Over a rate limit, or too many failed logins (code 10006)",
        true,
    );
    add("500", "Unexpected failure (code 10001)", false);
    add(
        "503",
        "A service it needs is down or overloaded, or the answer took too long (code 10001)",
        true,
    );
}

fn error_reply(description: &str, retry_after: bool) -> RefOr<Response> {
    let mut reply = ResponseBuilder::new().description(description).content(
        "application/json",
        Content::new(Some(Ref::from_schema_name("EmptyReply"))),
    );
    if retry_after {
        let seconds = ObjectBuilder::new().schema_type(Type::Integer).build();
        reply = reply.header(
            "Retry-After",
            HeaderBuilder::new()
                .schema(Some(seconds))
                .description(Some("Seconds to wait before retrying"))
                .build(),
        );
    }
    reply.build().into()
}

/// The document as served, built once.
pub fn json() -> &'static str {
    static JSON: OnceLock<String> = OnceLock::new();
    JSON.get_or_init(|| {
        ApiDoc::openapi()
            .to_json()
            .expect("the OpenAPI document serialises")
    })
}

/// This OpenAPI 3.1 document.
#[utoipa::path(get, path = "/openapi.json", tag = "health",
    responses((status = 200, description = "The OpenAPI document", body = serde_json::Value)))]
pub(crate) async fn document() -> ([(header::HeaderName, &'static str); 1], &'static str) {
    ([(header::CONTENT_TYPE, "application/json")], json())
}

#[cfg(test)]
mod tests {
    use easynote_shared::governance::rules::GATEWAY_ROUTES;
    use serde_json::Value;

    use super::json;

    #[test]
    fn every_route_is_described_with_its_errors_and_security() {
        let doc: Value = serde_json::from_str(json()).expect("JSON");
        assert_eq!(doc["openapi"], "3.1.0");
        let paths = doc["paths"].as_object().expect("paths");
        let mut routes: Vec<String> = paths
            .iter()
            .flat_map(|(path, item)| {
                let methods = item.as_object().expect("path item").keys();
                methods.map(move |method| format!("{} {path}", method.to_uppercase()))
            })
            .collect();
        routes.sort();
        // The governed ones, and the web app's (not in the document), are
        // the routes `easy-note rules check` knows.
        let web = ["GET /".to_owned(), "GET /assets/{file}".to_owned()];
        let mut governed: Vec<String> = GATEWAY_ROUTES
            .iter()
            .map(|(route, _)| (*route).to_owned())
            .collect();
        governed.sort();
        let mut described: Vec<&String> = routes
            .iter()
            .filter(|route| !crate::governance::exempt(route.split_once(' ').map_or("", |r| r.1)))
            .chain(&web)
            .collect();
        described.sort();
        assert_eq!(described, governed.iter().collect::<Vec<_>>());
        assert_eq!(
            routes,
            [
                "DELETE /v1/note/{note_id}",
                "GET /healthz",
                "GET /openapi.json",
                "GET /ping",
                "GET /readyz",
                "GET /v1/note/query",
                "GET /v1/note/{note_id}",
                "POST /v1/note",
                "POST /v1/user/login",
                "POST /v1/user/logout",
                "POST /v1/user/register",
                "PUT /v1/note/{note_id}",
            ]
        );
        let create = &paths["/v1/note"]["post"];
        for status in [
            "200", "400", "401", "408", "413", "422", "429", "500", "503",
        ] {
            assert!(
                create["responses"][status].is_object(),
                "POST /v1/note lacks {status}"
            );
        }
        assert_eq!(create["security"][0]["bearer"], Value::Array(vec![]));
        assert!(paths["/v1/user/login"]["post"]["security"].is_null());
        let logout = &paths["/v1/user/logout"]["post"];
        assert_eq!(logout["security"][0]["bearer"], Value::Array(vec![]));
        assert_ne!(
            logout["requestBody"]["required"], true,
            "the body is optional: {logout}"
        );
        assert_eq!(
            doc["components"]["securitySchemes"]["bearer"]["scheme"],
            "bearer"
        );
        for method in ["get", "put", "delete"] {
            let id = &paths["/v1/note/{note_id}"][method]["parameters"][0];
            assert_eq!(
                (
                    &id["name"],
                    &id["in"],
                    &id["required"],
                    &id["schema"]["minimum"]
                ),
                (&"note_id".into(), &"path".into(), &true.into(), &1.into()),
                "{method}: {id}"
            );
        }
        let credentials = &doc["components"]["schemas"]["Credentials"];
        assert_eq!(credentials["additionalProperties"], false);
        assert_eq!(credentials["properties"]["password"]["minLength"], 6);
    }

    #[test]
    fn the_query_route_describes_cursor_paging_beside_offset() {
        let doc: Value = serde_json::from_str(json()).expect("JSON");
        let query = &doc["paths"]["/v1/note/query"]["get"];
        let params: Vec<(&str, &str, bool)> = query["parameters"]
            .as_array()
            .expect("parameters")
            .iter()
            .map(|p| {
                (
                    p["name"].as_str().expect("name"),
                    p["in"].as_str().expect("in"),
                    p["required"].as_bool().unwrap_or(false),
                )
            })
            .collect();
        assert_eq!(
            params,
            [
                ("search_key", "query", false),
                ("offset", "query", false),
                ("limit", "query", false),
                ("cursor", "query", false),
            ],
            "every paging parameter stays optional, so old clients are unaffected"
        );
        let page = &doc["components"]["schemas"]["NotePage"];
        assert!(
            page["properties"]["next_cursor"].is_object(),
            "NotePage lacks next_cursor: {page}"
        );
        let required: Vec<&str> = page["required"]
            .as_array()
            .expect("required")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert_eq!(
            required,
            ["total", "notes"],
            "next_cursor is absent on the last page"
        );
        assert!(
            query["responses"]["400"]["description"]
                .as_str()
                .is_some_and(|d| d.contains("cursor")),
            "{}",
            query["responses"]["400"]
        );
    }
}
