//! Payloads as the Nacos SDKs frame them: the request or response type's simple name in
//! `metadata.type`, its JSON in `body.value`.
//!
//! Requests are read as [`Inbound`] (type, headers, the JSON object); answers are built
//! as JSON objects with the fields every Nacos response carries (`resultCode`,
//! `errorCode`, `message`, `requestId`, `success`).

use berth_proto::nacos as pb;
use serde_json::{Map, Value, json};

/// `resultCode` of a successful response.
pub const OK: u64 = 200;
/// `resultCode` of a failed one (the reason is in `errorCode` and `message`).
pub const FAIL: u64 = 500;

/// `errorCode`s, as Nacos numbers them.
pub mod code {
    /// A request on a connection the server does not know (the SDK then reconnects).
    pub const UNREGISTERED: u64 = 301;
    /// No handler for the request type.
    pub const NO_HANDLER: u64 = 302;
    /// A parameter is missing or invalid.
    pub const BAD_PARAM: u64 = 400;
    /// The token is missing, expired or wrong.
    pub const NO_RIGHT: u64 = 403;
    /// The thing asked for does not exist.
    pub const NOT_FOUND: u64 = 404;
    /// The server failed (a store error, shutting down).
    pub const SERVER_ERROR: u64 = 500;
    /// A config the query names does not exist (ConfigQuery's own code).
    pub const CONFIG_NOT_FOUND: u64 = 300;
}

/// A decoded request (or a client's response to a server push).
#[derive(Debug, Clone)]
pub struct Inbound {
    pub kind: String,
    pub client_ip: String,
    pub headers: std::collections::HashMap<String, String>,
    pub body: Map<String, Value>,
}

impl Inbound {
    /// Reads a payload. `Err` is the message to answer with: the payload could not be a
    /// Nacos request at all.
    pub fn decode(payload: pb::Payload) -> Result<Self, String> {
        let metadata = payload.metadata.unwrap_or_default();
        if metadata.r#type.is_empty() {
            return Err(
                "the payload has no metadata.type: every Nacos request names its type".into(),
            );
        }
        let raw = payload.body.map(|b| b.value).unwrap_or_default();
        let body = if raw.is_empty() {
            Map::new()
        } else {
            match serde_json::from_slice::<Value>(&raw) {
                Ok(Value::Object(map)) => map,
                Ok(_) => {
                    return Err(format!(
                        "the body of {} is not a JSON object",
                        metadata.r#type
                    ));
                }
                Err(err) => {
                    return Err(format!(
                        "the body of {} is not JSON: {err}",
                        metadata.r#type
                    ));
                }
            }
        };
        Ok(Self {
            kind: metadata.r#type,
            client_ip: metadata.client_ip,
            headers: metadata.headers,
            body,
        })
    }

    pub fn request_id(&self) -> String {
        self.str("requestId").unwrap_or_default().to_string()
    }

    /// A string field; `None` when absent, null or not a string.
    pub fn str(&self, field: &str) -> Option<&str> {
        self.body.get(field).and_then(Value::as_str)
    }

    /// A header of the request: the SDKs put `accessToken` and friends in the request
    /// object's `headers` and some also in the payload metadata.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.body
            .get("headers")
            .and_then(|h| h.get(name))
            .and_then(Value::as_str)
            .or_else(|| self.headers.get(name).map(String::as_str))
            .filter(|v| !v.is_empty())
    }
}

/// Frames `body` as a payload of type `kind`.
pub fn encode(kind: &str, body: &Value) -> pb::Payload {
    pb::Payload {
        metadata: Some(pb::Metadata {
            r#type: kind.to_string(),
            client_ip: String::new(),
            headers: Default::default(),
        }),
        body: Some(pb::Any {
            type_url: String::new(),
            value: serde_json::to_vec(body).unwrap_or_default(),
        }),
    }
}

/// A successful response of type `kind` to request `request_id`, with `fields` added.
pub fn ok(kind: &str, request_id: &str, fields: Value) -> pb::Payload {
    let mut body = json!({
        "resultCode": OK,
        "errorCode": 0,
        "message": "",
        "requestId": request_id,
        "success": true,
    });
    merge(&mut body, fields);
    encode(kind, &body)
}

/// What a handler answers with: fields as a JSON value, or already rendered as the text
/// of a JSON object (a service's instance list is rendered once, straight to text).
pub enum Fields {
    Json(Value),
    Raw(String),
}

impl From<Value> for Fields {
    fn from(value: Value) -> Self {
        Fields::Json(value)
    }
}

/// A successful response whose fields come as [`Fields`].
pub fn ok_fields(kind: &str, request_id: &str, fields: Fields) -> pb::Payload {
    let raw = match fields {
        Fields::Json(value) => return ok(kind, request_id, value),
        Fields::Raw(raw) => raw,
    };
    let rest = raw.trim_start().strip_prefix('{').unwrap_or("}");
    let separator = if rest.trim_start().starts_with('}') {
        ""
    } else {
        ","
    };
    let id = serde_json::to_string(request_id).unwrap_or_else(|_| "\"\"".into());
    let body = format!(
        "{{\"resultCode\":{OK},\"errorCode\":0,\"message\":\"\",\"requestId\":{id},\"success\":true{separator}{rest}"
    );
    pb::Payload {
        metadata: Some(pb::Metadata {
            r#type: kind.to_string(),
            client_ip: String::new(),
            headers: Default::default(),
        }),
        body: Some(pb::Any {
            type_url: String::new(),
            value: body.into_bytes(),
        }),
    }
}

/// A failed response. Nacos answers a request it cannot serve with the response type of
/// that request when it has one (the SDK reads it) or `ErrorResponse`.
pub fn fail(
    kind: &str,
    request_id: &str,
    error_code: u64,
    message: impl Into<String>,
) -> pb::Payload {
    let body = json!({
        "resultCode": FAIL,
        "errorCode": error_code,
        "message": message.into(),
        "requestId": request_id,
        "success": false,
    });
    encode(kind, &body)
}

fn merge(into: &mut Value, fields: Value) {
    if let (Value::Object(into), Value::Object(fields)) = (into, fields) {
        into.extend(fields);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(kind: &str, body: &[u8]) -> pb::Payload {
        pb::Payload {
            metadata: Some(pb::Metadata {
                r#type: kind.into(),
                client_ip: "10.0.0.9".into(),
                headers: [("app".to_string(), "shop".to_string())].into(),
            }),
            body: Some(pb::Any {
                type_url: String::new(),
                value: body.to_vec(),
            }),
        }
    }

    #[test]
    fn requests_decode_with_their_type_headers_and_fields() {
        let inbound = Inbound::decode(payload(
            "InstanceRequest",
            br#"{"requestId":"7","serviceName":"web","headers":{"accessToken":"t"}}"#,
        ))
        .unwrap();
        assert_eq!(inbound.kind, "InstanceRequest");
        assert_eq!(inbound.request_id(), "7");
        assert_eq!(inbound.str("serviceName"), Some("web"));
        assert_eq!(inbound.header("accessToken"), Some("t"));
        assert_eq!(inbound.header("app"), Some("shop"));
        assert_eq!(inbound.client_ip, "10.0.0.9");
    }

    #[test]
    fn broken_payloads_are_named() {
        let err = Inbound::decode(payload("", b"{}")).unwrap_err();
        assert!(err.contains("metadata.type"), "{err}");
        let err = Inbound::decode(payload("X", b"[1]")).unwrap_err();
        assert!(err.contains("not a JSON object"), "{err}");
        let err = Inbound::decode(payload("X", b"{")).unwrap_err();
        assert!(err.contains("not JSON"), "{err}");
        assert!(Inbound::decode(payload("HealthCheckRequest", b"")).is_ok());
    }

    #[test]
    fn raw_fields_splice_into_the_common_ones() {
        let p = ok_fields(
            "QueryServiceResponse",
            "7\"",
            Fields::Raw(r#"{"serviceInfo":{"name":"a","hosts":[]}}"#.into()),
        );
        let v: Value = serde_json::from_slice(&p.body.unwrap().value).unwrap();
        assert_eq!(v["resultCode"], 200);
        assert_eq!(v["requestId"], "7\"");
        assert_eq!(v["serviceInfo"]["name"], "a");
        let p = ok_fields("X", "1", Fields::Raw("{}".into()));
        let v: Value = serde_json::from_slice(&p.body.unwrap().value).unwrap();
        assert_eq!(v["success"], true);
    }

    #[test]
    fn answers_carry_the_common_fields() {
        let p = ok("HealthCheckResponse", "3", json!({"extra": 1}));
        assert_eq!(p.metadata.as_ref().unwrap().r#type, "HealthCheckResponse");
        let v: Value = serde_json::from_slice(&p.body.unwrap().value).unwrap();
        assert_eq!(v["resultCode"], 200);
        assert_eq!(v["requestId"], "3");
        assert_eq!(v["extra"], 1);
        let p = fail("ErrorResponse", "4", code::NO_HANDLER, "no handler");
        let v: Value = serde_json::from_slice(&p.body.unwrap().value).unwrap();
        assert_eq!(v["resultCode"], 500);
        assert_eq!(v["errorCode"], 302);
        assert_eq!(v["success"], false);
    }
}
