//! Property tests of the Nacos 2.x gRPC services over a real loopback connection: any
//! payload (known or unknown types, any body, garbage bytes) gets a Nacos response whose
//! failure names what is wrong, never a dropped call or a panic; any sequence of frames
//! on a stream ends it cleanly or keeps it, and the server keeps serving.

use std::net::SocketAddr;
use std::sync::Arc;

use berth_proto::nacos as pb;
use berth_proto::nacos::bi_request_stream_client::BiRequestStreamClient;
use berth_proto::nacos::request_client::RequestClient;
use berth_registry::auth::Auth;
use berth_registry::config_center::{ConfigCenter, DEFAULT_MAX_CONTENT, kv_options};
use berth_registry::core::{CoreOptions, Registry};
use berth_registry::nacos_grpc::{GrpcOptions, NacosGrpc};
use proptest::prelude::*;
use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;

const KINDS: &[&str] = &[
    "ServerCheckRequest",
    "HealthCheckRequest",
    "InstanceRequest",
    "BatchInstanceRequest",
    "PersistentInstanceRequest",
    "ServiceQueryRequest",
    "SubscribeServiceRequest",
    "ServiceListRequest",
    "ConfigQueryRequest",
    "ConfigPublishRequest",
    "ConfigRemoveRequest",
    "ConfigBatchListenRequest",
    "ConnectionSetupRequest",
    "NotifySubscriberResponse",
    "",
    "NoSuchRequest",
];

const FIELDS: &[&str] = &[
    "requestId",
    "namespace",
    "serviceName",
    "groupName",
    "type",
    "instance",
    "instances",
    "subscribe",
    "clusters",
    "cluster",
    "healthyOnly",
    "pageNo",
    "pageSize",
    "dataId",
    "group",
    "tenant",
    "content",
    "casMd5",
    "additionMap",
    "listen",
    "configListenContexts",
    "ip",
    "port",
    "weight",
    "metadata",
    "ephemeral",
    "clusterName",
    "md5",
    "headers",
];

const WORDS: &[&str] = &[
    "registerInstance",
    "deregisterInstance",
    "batchRegisterInstance",
    "svc",
    "DEFAULT_GROUP",
    "public",
    "",
    "10.0.0.1",
    "a/b",
    "x y",
    "app.yaml",
];

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        (0u32..70000).prop_map(|n| json!(n)),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        prop::sample::select(WORDS.to_vec()).prop_map(|w| json!(w)),
        ".{0,24}".prop_map(Value::String),
    ]
}

fn value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((prop::sample::select(FIELDS.to_vec()), inner), 0..6).prop_map(
                |pairs| {
                    Value::Object(
                        pairs
                            .into_iter()
                            .map(|(k, v)| (k.to_string(), v))
                            .collect::<Map<_, _>>(),
                    )
                }
            ),
        ]
    })
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..120),
        prop::collection::vec((prop::sample::select(FIELDS.to_vec()), value()), 0..8).prop_map(
            |pairs| {
                let map: Map<String, Value> =
                    pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
                serde_json::to_vec(&Value::Object(map)).unwrap()
            }
        ),
    ]
}

fn payload(kind: &str, body: Vec<u8>) -> pb::Payload {
    pb::Payload {
        metadata: Some(pb::Metadata {
            r#type: kind.to_string(),
            client_ip: String::new(),
            headers: Default::default(),
        }),
        body: Some(pb::Any {
            type_url: String::new(),
            value: body,
        }),
    }
}

struct Server {
    addr: SocketAddr,
    channel: tonic::transport::Channel,
    /// Keeps the connection's stream (its setup) open.
    _setup: tokio::sync::mpsc::Sender<pb::Payload>,
    _stream: tonic::Streaming<pb::Payload>,
}

async fn start() -> Server {
    let registry = Registry::start(CoreOptions::default()).unwrap();
    let store = berth_kv::SqliteKv::in_memory(kv_options(berth_kv::KvOptions::default())).unwrap();
    let configs = Arc::new(ConfigCenter::new(
        berth_kv::KvHandle::new(Arc::new(store)),
        DEFAULT_MAX_CONTENT,
    ));
    let nacos = NacosGrpc::new(
        registry,
        Arc::new(Auth::new(None)),
        configs,
        GrpcOptions::default(),
        CancellationToken::new(),
    );
    tokio::spawn(nacos.clone().run());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(nacos.request_server())
            .add_service(nacos.stream_server())
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let (setup, rx) = tokio::sync::mpsc::channel(4);
    setup
        .send(payload(
            "ConnectionSetupRequest",
            br#"{"clientVersion":"props"}"#.to_vec(),
        ))
        .await
        .unwrap();
    let stream = BiRequestStreamClient::new(channel.clone())
        .request_bi_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    Server {
        addr,
        channel,
        _setup: setup,
        _stream: stream,
    }
}

thread_local! {
    static RT: tokio::runtime::Runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    static SERVER: Server = RT.with(|rt| rt.block_on(start()));
}

/// A response SDKs can read: a type, a JSON object with the common fields, a failure
/// that says why, and no `null` where SDKs want a string.
fn check_answer(kind: &str, answer: pb::Payload) {
    let meta = answer.metadata.expect("a response has metadata");
    assert!(!meta.r#type.is_empty(), "{kind}: a response without a type");
    let body: Value =
        serde_json::from_slice(&answer.body.expect("a body").value).expect("a JSON body");
    let code = body["resultCode"].as_u64().expect("resultCode");
    assert!(code == 200 || code == 500, "{kind}: resultCode {code}");
    assert!(body["errorCode"].is_u64(), "{kind}: errorCode {body}");
    assert!(
        body["message"].is_string(),
        "{kind}: message must be a string: {body}"
    );
    if code == 500 {
        assert!(
            !body["message"].as_str().unwrap_or_default().is_empty(),
            "{kind}: a failure that says nothing: {body}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn any_unary_payload_gets_a_readable_answer(
        kind in prop::sample::select(KINDS.to_vec()),
        body in body(),
    ) {
        RT.with(|rt| SERVER.with(|server| rt.block_on(async {
            let mut client = RequestClient::new(server.channel.clone());
            let answer = client
                .request(payload(kind, body))
                .await
                .expect("an answer, never a failed call")
                .into_inner();
            check_answer(kind, answer);
        })));
    }

    #[test]
    fn any_frames_on_a_stream_leave_the_server_serving(
        frames in prop::collection::vec(
            (prop::sample::select(KINDS.to_vec()), body()), 1..5),
    ) {
        RT.with(|rt| SERVER.with(|server| rt.block_on(async {
            let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", server.addr))
                .unwrap()
                .connect()
                .await
                .unwrap();
            let (tx, rx) = tokio::sync::mpsc::channel(8);
            for (kind, body) in frames {
                tx.send(payload(kind, body)).await.unwrap();
            }
            drop(tx);
            let opened = BiRequestStreamClient::new(channel)
                .request_bi_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
                .await;
            if let Ok(stream) = opened {
                let mut stream = stream.into_inner();
                // Ends (cleanly or with a status) once our side is done; never hangs.
                let ended = tokio::time::timeout(std::time::Duration::from_secs(15), async {
                    while let Ok(Some(_)) = stream.message().await {}
                })
                .await;
                assert!(ended.is_ok(), "the stream did not end after the client's side did");
            }
            let mut client = RequestClient::new(server.channel.clone());
            let check = client
                .request(payload("ServerCheckRequest", b"{}".to_vec()))
                .await
                .expect("the server still serves")
                .into_inner();
            check_answer("ServerCheckRequest", check);
        })));
    }
}
