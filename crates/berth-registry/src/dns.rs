//! The Consul DNS interface: answers for the `consul.` zone from the naming core's state
//! at the time of each query, over UDP and TCP (hickory-server), never forwarding.
//!
//! Names (case-insensitive, `.dc1` may follow `service`, `node` and `addr`):
//!
//! - `<service>.service.consul`: A / AAAA of the passing instances, SRV of them.
//! - `<tag>.<service>.service.consul`: the same, only instances carrying the tag.
//! - `_<service>._tcp.service.consul` (RFC 2782) and `_<service>._<tag>.service.consul`.
//! - `<name>.<group>.<namespace>.nacos.service.consul`: a Nacos service of any group
//!   and namespace (four labels before `service`, so no tag lookup can match it).
//! - `<node>.node.consul`: the agent's node (`berth`, as `/v1/agent/self` names it).
//! - `<hex-ip>.addr.consul`: the address an SRV target names.
//!
//! Everything else under `consul.` is NXDOMAIN with the zone's SOA; other zones are
//! REFUSED.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Edns, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, SOA, SRV};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::BinEncoder;
use hickory_server::net::runtime::Time;
use hickory_server::net::xfer::Protocol;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use rand::seq::SliceRandom;

use crate::core::Registry;
use crate::http::consul::{DATACENTER, NODE, NODE_ADDRESS};
use crate::model::{DEFAULT_GROUP, DEFAULT_NAMESPACE, HealthStatus, Instance, Service};

/// The zone served.
pub const DOMAIN: &str = "consul";
/// The largest UDP answer, whatever EDNS0 size a query advertises.
pub const MAX_UDP_PAYLOAD: u16 = 4096;
/// A UDP answer's limit without EDNS0 (RFC 1035).
pub const MIN_UDP_PAYLOAD: u16 = 512;
/// How long a TCP connection may stay idle between queries.
const TCP_IDLE: Duration = Duration::from_secs(10);

/// Which service a name asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A Consul name: the default namespace, the default group (as `/v1/catalog` lists it).
    Consul(String),
    /// A Nacos service of any group and namespace.
    Nacos {
        namespace: String,
        group: String,
        name: String,
    },
}

/// What a name in the zone asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// The zone's apex, `consul.`.
    Apex,
    Service {
        target: Target,
        tag: Option<String>,
    },
    Node(String),
    Addr(IpAddr),
}

/// A query name sorted out: outside the zone (REFUSED), a name of the zone that cannot
/// exist (NXDOMAIN), or a lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    Outside,
    NoSuchName,
    Lookup(Lookup),
}

/// Sorts a query name out; `labels` run from the leftmost label, the root excluded.
pub fn parse_labels(labels: &[String]) -> Parsed {
    let labels: Vec<String> = labels.iter().map(|l| l.to_ascii_lowercase()).collect();
    let Some((last, rest)) = labels.split_last() else {
        return Parsed::Outside;
    };
    if last != DOMAIN {
        return Parsed::Outside;
    }
    let mut rest: &[String] = rest;
    // `<...>.service.dc1.consul`: the one datacenter.
    if rest.len() >= 2
        && rest[rest.len() - 1] == DATACENTER
        && matches!(rest[rest.len() - 2].as_str(), "service" | "node" | "addr")
    {
        rest = &rest[..rest.len() - 1];
    }
    let Some((kind, before)) = rest.split_last() else {
        return Parsed::Lookup(Lookup::Apex);
    };
    let lookup = match (kind.as_str(), before) {
        ("service", [name]) => Lookup::Service {
            target: Target::Consul(name.clone()),
            tag: None,
        },
        ("service", [first, second]) => {
            match (first.strip_prefix('_'), second.strip_prefix('_')) {
                // RFC 2782: `_<service>._<protocol>`; Consul reads the protocol as a tag,
                // `_tcp` as none.
                (Some(service), Some(tag)) if !service.is_empty() && !tag.is_empty() => {
                    Lookup::Service {
                        target: Target::Consul(service.to_string()),
                        tag: (tag != "tcp").then(|| tag.to_string()),
                    }
                }
                _ => Lookup::Service {
                    target: Target::Consul(second.clone()),
                    tag: Some(first.clone()),
                },
            }
        }
        ("service", [name, group, namespace, nacos]) if nacos == "nacos" => Lookup::Service {
            target: Target::Nacos {
                namespace: namespace.clone(),
                group: group.clone(),
                name: name.clone(),
            },
            tag: None,
        },
        ("node", [node]) => Lookup::Node(node.clone()),
        ("addr", [hex]) => match parse_hex_ip(hex) {
            Some(ip) => Lookup::Addr(ip),
            None => return Parsed::NoSuchName,
        },
        _ => return Parsed::NoSuchName,
    };
    Parsed::Lookup(lookup)
}

/// Sorts a query name out.
pub fn parse_name(name: &Name) -> Parsed {
    let labels: Vec<String> = name
        .iter()
        .map(|l| String::from_utf8_lossy(l).into_owned())
        .collect();
    parse_labels(&labels)
}

/// `7f000001` -> 127.0.0.1; 32 hex digits -> an IPv6 address (Consul's `addr` names).
pub fn parse_hex_ip(hex: &str) -> Option<IpAddr> {
    if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    match hex.len() {
        8 => u32::from_str_radix(hex, 16)
            .ok()
            .map(|v| IpAddr::V4(Ipv4Addr::from(v))),
        32 => u128::from_str_radix(hex, 16)
            .ok()
            .map(|v| IpAddr::V6(Ipv6Addr::from(v))),
        _ => None,
    }
}

/// The `addr` name of an address: `<hex>.addr.dc1.consul.`, Consul's SRV target.
pub fn addr_name(ip: IpAddr) -> Name {
    let hex = match ip {
        IpAddr::V4(v4) => format!("{:08x}", u32::from(v4)),
        IpAddr::V6(v6) => format!("{:032x}", u128::from(v6)),
    };
    Name::from_ascii(format!("{hex}.addr.{DATACENTER}.{DOMAIN}.")).expect("hex labels are valid")
}

fn zone() -> Name {
    Name::from_ascii(format!("{DOMAIN}.")).expect("valid zone")
}

/// What one query is answered with.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub code: ResponseCode,
    pub answers: Vec<Record>,
    pub additionals: Vec<Record>,
    /// The zone's SOA goes in the authority section (NXDOMAIN, or no data).
    pub soa: bool,
}

impl Answer {
    fn refused() -> Self {
        Self {
            code: ResponseCode::Refused,
            answers: Vec::new(),
            additionals: Vec::new(),
            soa: false,
        }
    }

    fn nxdomain() -> Self {
        Self {
            code: ResponseCode::NXDomain,
            answers: Vec::new(),
            additionals: Vec::new(),
            soa: true,
        }
    }

    fn records(answers: Vec<Record>, additionals: Vec<Record>) -> Self {
        let soa = answers.is_empty();
        Self {
            code: ResponseCode::NoError,
            answers,
            additionals,
            soa,
        }
    }
}

/// Builds the answers from the naming core.
#[derive(Clone)]
pub struct DnsResolver {
    registry: Registry,
    ttl: u32,
}

impl DnsResolver {
    pub fn new(registry: Registry, ttl: Duration) -> Self {
        Self {
            registry,
            ttl: u32::try_from(ttl.as_secs()).unwrap_or(u32::MAX),
        }
    }

    /// The zone's SOA record; its serial is the registry's revision.
    pub fn soa(&self) -> Record {
        let serial = (self.registry.revision() & u64::from(u32::MAX)) as u32;
        let zone = zone();
        let mname = Name::from_ascii(format!("ns.{DOMAIN}.")).expect("valid");
        let rname = Name::from_ascii(format!("hostmaster.{DOMAIN}.")).expect("valid");
        Record::from_rdata(
            zone,
            self.ttl,
            RData::SOA(SOA::new(mname, rname, serial, 3600, 600, 86400, self.ttl)),
        )
    }

    /// The instances a service lookup names: passing, enabled, with the tag.
    fn instances(&self, target: &Target, tag: Option<&str>) -> Vec<Arc<Instance>> {
        let (_, services) = self.registry.snapshot();
        let matches = |s: &Service| match target {
            Target::Consul(name) => {
                &*s.key.namespace == DEFAULT_NAMESPACE
                    && &*s.key.group == DEFAULT_GROUP
                    && s.key.name.eq_ignore_ascii_case(name)
            }
            Target::Nacos {
                namespace,
                group,
                name,
            } => {
                s.key.namespace.eq_ignore_ascii_case(namespace)
                    && s.key.group.eq_ignore_ascii_case(group)
                    && s.key.name.eq_ignore_ascii_case(name)
            }
        };
        services
            .iter()
            .filter(|s| matches(s))
            .flat_map(|s| s.instances.values())
            .filter(|i| {
                i.enabled
                    && i.status == HealthStatus::Passing
                    && tag.is_none_or(|t| i.tags.iter().any(|it| it.eq_ignore_ascii_case(t)))
            })
            .cloned()
            .collect()
    }

    /// Answers a name and type; `name` is the query's own name (owner of the answers).
    pub fn resolve(&self, name: &Name, qtype: RecordType) -> Answer {
        let lookup = match parse_name(name) {
            Parsed::Outside => return Answer::refused(),
            Parsed::NoSuchName => return Answer::nxdomain(),
            Parsed::Lookup(l) => l,
        };
        let mut owner = name.clone();
        owner.set_fqdn(true);
        match lookup {
            Lookup::Apex => {
                let answers = match qtype {
                    RecordType::SOA | RecordType::ANY => vec![self.soa()],
                    _ => Vec::new(),
                };
                Answer::records(answers, Vec::new())
            }
            Lookup::Node(node) => {
                if !node.eq_ignore_ascii_case(NODE) {
                    return Answer::nxdomain();
                }
                let ip: IpAddr = NODE_ADDRESS.parse().expect("valid node address");
                Answer::records(self.address_records(&owner, &[ip], qtype), Vec::new())
            }
            Lookup::Addr(ip) => {
                Answer::records(self.address_records(&owner, &[ip], qtype), Vec::new())
            }
            Lookup::Service { target, tag } => {
                let mut instances = self.instances(&target, tag.as_deref());
                if instances.is_empty() {
                    // Consul answers a service with no passing instance as an unknown name.
                    return Answer::nxdomain();
                }
                instances.shuffle(&mut rand::rng());
                match qtype {
                    RecordType::SRV => {
                        let (answers, additionals) = self.srv_records(&owner, &instances);
                        Answer::records(answers, additionals)
                    }
                    _ => {
                        let mut ips: Vec<IpAddr> = Vec::new();
                        for i in &instances {
                            if let Ok(ip) = i.ip.parse::<IpAddr>()
                                && !ips.contains(&ip)
                            {
                                ips.push(ip);
                            }
                        }
                        Answer::records(self.address_records(&owner, &ips, qtype), Vec::new())
                    }
                }
            }
        }
    }

    /// A records for the IPv4 addresses (A, ANY), AAAA for the IPv6 ones (AAAA, ANY).
    fn address_records(&self, owner: &Name, ips: &[IpAddr], qtype: RecordType) -> Vec<Record> {
        ips.iter()
            .filter_map(|ip| match (ip, qtype) {
                (IpAddr::V4(v4), RecordType::A | RecordType::ANY) => Some(Record::from_rdata(
                    owner.clone(),
                    self.ttl,
                    RData::A(A(*v4)),
                )),
                (IpAddr::V6(v6), RecordType::AAAA | RecordType::ANY) => Some(Record::from_rdata(
                    owner.clone(),
                    self.ttl,
                    RData::AAAA(AAAA(*v6)),
                )),
                _ => None,
            })
            .collect()
    }

    /// SRV records (priority 1, the instance's weight, its port) whose targets are the
    /// `addr` names, and their A / AAAA records for the additional section. An instance
    /// whose address is a host name has that name as its target, with no additional
    /// record.
    fn srv_records(&self, owner: &Name, instances: &[Arc<Instance>]) -> (Vec<Record>, Vec<Record>) {
        let mut answers = Vec::with_capacity(instances.len());
        let mut additionals: Vec<Record> = Vec::new();
        for i in instances {
            let weight = srv_weight(i.weight);
            let target = match i.ip.parse::<IpAddr>() {
                Ok(ip) => {
                    let target = addr_name(ip);
                    if !additionals.iter().any(|r| r.name == target) {
                        additionals.extend(self.address_records(&target, &[ip], RecordType::ANY));
                    }
                    target
                }
                Err(_) => match Name::from_ascii(format!("{}.", i.ip.trim_end_matches('.'))) {
                    Ok(name) => name,
                    Err(_) => continue,
                },
            };
            answers.push(Record::from_rdata(
                owner.clone(),
                self.ttl,
                RData::SRV(SRV::new(1, weight, i.port, target)),
            ));
        }
        (answers, additionals)
    }
}

/// An instance weight as an SRV weight: rounded, at least 1.
pub fn srv_weight(weight: f64) -> u16 {
    if weight.is_finite() {
        weight.round().clamp(1.0, f64::from(u16::MAX)) as u16
    } else {
        1
    }
}

/// The UDP payload size a response may use: the query's EDNS0 size (at least 512, at
/// most [`MAX_UDP_PAYLOAD`]), 512 without EDNS0.
pub fn udp_limit(edns: Option<&Edns>) -> u16 {
    edns.map_or(MIN_UDP_PAYLOAD, |e| {
        e.max_payload().clamp(MIN_UDP_PAYLOAD, MAX_UDP_PAYLOAD)
    })
}

/// Cuts `answer` so its UDP message fits in `limit` bytes, `size` measuring the message
/// a set of answers and additional records makes: the most answers that fit, with the
/// additional records of their SRV targets only. Returns true when something was cut
/// (the TC bit). hickory's encoder would cut too, but leaves the bytes of the record that
/// did not fit after the message, which strict clients (dnspython) refuse.
pub fn fit_udp(
    answer: &mut Answer,
    limit: u16,
    size: impl Fn(&[Record], &[Record]) -> usize,
) -> bool {
    let limit = usize::from(limit);
    if size(&answer.answers, &answer.additionals) <= limit {
        return false;
    }
    let extras_for = |answers: &[Record]| -> Vec<Record> {
        answer
            .additionals
            .iter()
            .filter(|extra| {
                answers.iter().any(|a| match &a.data {
                    RData::SRV(srv) => srv.target == extra.name,
                    _ => false,
                })
            })
            .cloned()
            .collect()
    };
    // The most answers that fit: 0 always does (the question, the SOA, EDNS).
    let (mut low, mut high) = (0, answer.answers.len());
    while low < high {
        let mid = (low + high).div_ceil(2);
        let answers = &answer.answers[..mid];
        if size(answers, &extras_for(answers)) <= limit {
            low = mid;
        } else {
            high = mid - 1;
        }
    }
    answer.answers.truncate(low);
    answer.additionals = extras_for(&answer.answers);
    true
}

/// hickory-server's handler over [`DnsResolver`].
pub struct DnsHandler {
    resolver: DnsResolver,
}

impl DnsHandler {
    pub fn new(resolver: DnsResolver) -> Self {
        Self { resolver }
    }
}

#[async_trait::async_trait]
impl RequestHandler for DnsHandler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let mut metadata = Metadata::response_from_request(&request.metadata);
        // hickory sizes a UDP answer by the response's EDNS payload size and sets TC when
        // records had to be left out.
        let edns = request.edns.as_ref().map(|e| {
            let mut out = Edns::new();
            out.set_max_payload(udp_limit(Some(e)));
            out
        });
        let mut builder = MessageResponseBuilder::from_message_request(request);
        if let Some(edns) = &edns {
            builder.edns(edns);
        }
        let answer = if request.metadata.op_code != OpCode::Query {
            Answer {
                code: ResponseCode::NotImp,
                ..Answer::refused()
            }
        } else {
            match request.request_info() {
                Ok(info) => {
                    let name: Name = info.query.name().into();
                    self.resolver.resolve(&name, info.query.query_type())
                }
                Err(_) => Answer {
                    code: ResponseCode::FormErr,
                    ..Answer::refused()
                },
            }
        };
        let mut answer = answer;
        metadata.response_code = answer.code;
        metadata.authoritative = answer.code != ResponseCode::Refused;
        let soa: Vec<Record> = if answer.soa {
            vec![self.resolver.soa()]
        } else {
            Vec::new()
        };
        if request.protocol() == Protocol::Udp {
            // Measured the way the response is encoded.
            let size = |answers: &[Record], additionals: &[Record]| -> usize {
                let mut builder = MessageResponseBuilder::from_message_request(request);
                if let Some(edns) = &edns {
                    builder.edns(edns);
                }
                let mut bytes = Vec::with_capacity(512);
                let mut encoder = BinEncoder::new(&mut bytes);
                let emitted = builder
                    .build(
                        metadata,
                        answers.iter(),
                        std::iter::empty(),
                        soa.iter(),
                        additionals.iter(),
                    )
                    .destructive_emit(&mut encoder);
                emitted.map_or(usize::MAX, |_| bytes.len())
            };
            metadata.truncation = fit_udp(&mut answer, udp_limit(request.edns.as_ref()), size);
        }
        let response = builder.build(
            metadata,
            answer.answers.iter(),
            std::iter::empty(),
            soa.iter(),
            answer.additionals.iter(),
        );
        match response_handle.send_response(response).await {
            Ok(info) => info,
            Err(err) => {
                tracing::debug!(%err, "cannot send a DNS response");
                let mut metadata = Metadata::response_from_request(&request.metadata);
                metadata.response_code = ResponseCode::ServFail;
                hickory_proto::op::Header {
                    metadata,
                    counts: Default::default(),
                }
                .into()
            }
        }
    }
}

/// Binds UDP and TCP on `addr` (port 0: one free port for both).
pub async fn bind(
    addr: SocketAddr,
) -> std::io::Result<(tokio::net::UdpSocket, tokio::net::TcpListener)> {
    let mut last = None;
    for _ in 0..if addr.port() == 0 { 20 } else { 1 } {
        let udp = tokio::net::UdpSocket::bind(addr).await?;
        let bound = udp.local_addr()?;
        match tokio::net::TcpListener::bind(bound).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(err) => last = Some(err),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no free port")))
}

/// Serves DNS on the bound sockets until `token` is cancelled.
pub async fn serve(
    udp: tokio::net::UdpSocket,
    tcp: tokio::net::TcpListener,
    resolver: DnsResolver,
    token: tokio_util::sync::CancellationToken,
) {
    let mut server = hickory_server::Server::new(DnsHandler::new(resolver));
    server.register_socket(udp);
    server.register_listener(tcp, TCP_IDLE, 64);
    let stop = server.shutdown_token().clone();
    tokio::spawn(async move {
        token.cancelled().await;
        stop.cancel();
    });
    if let Err(err) = server.block_until_done().await {
        tracing::error!(%err, "DNS server failed");
    }
}

#[cfg(test)]
mod tests {
    use hickory_proto::op::{Message, Query};
    use hickory_proto::serialize::binary::BinDecodable;

    use super::*;
    use crate::core::CoreOptions;
    use crate::model::{DEFAULT_CLUSTER, ServiceKey};
    use crate::naming::Op;

    fn labels(name: &str) -> Parsed {
        parse_name(&Name::from_ascii(name).unwrap())
    }

    fn consul(name: &str, tag: Option<&str>) -> Parsed {
        Parsed::Lookup(Lookup::Service {
            target: Target::Consul(name.into()),
            tag: tag.map(str::to_string),
        })
    }

    #[test]
    fn names_parse() {
        assert_eq!(labels("web.service.consul."), consul("web", None));
        assert_eq!(labels("Web.Service.CONSUL"), consul("web", None));
        assert_eq!(labels("web.service.dc1.consul."), consul("web", None));
        assert_eq!(labels("v1.web.service.consul."), consul("web", Some("v1")));
        assert_eq!(labels("_web._tcp.service.consul."), consul("web", None));
        assert_eq!(
            labels("_web._v1.service.consul."),
            consul("web", Some("v1"))
        );
        assert_eq!(labels("_web._tcp.service.dc1.consul."), consul("web", None));
        assert_eq!(
            labels("orders.shop.dev.nacos.service.consul."),
            Parsed::Lookup(Lookup::Service {
                target: Target::Nacos {
                    namespace: "dev".into(),
                    group: "shop".into(),
                    name: "orders".into()
                },
                tag: None
            })
        );
        // A service named `nacos` keeps its tag lookups.
        assert_eq!(
            labels("v1.nacos.service.consul."),
            consul("nacos", Some("v1"))
        );
        assert_eq!(
            labels("berth.node.consul."),
            Parsed::Lookup(Lookup::Node("berth".into()))
        );
        assert_eq!(
            labels("berth.node.dc1.consul."),
            Parsed::Lookup(Lookup::Node("berth".into()))
        );
        assert_eq!(
            labels("7f000001.addr.dc1.consul."),
            Parsed::Lookup(Lookup::Addr("127.0.0.1".parse().unwrap()))
        );
        assert_eq!(labels("consul."), Parsed::Lookup(Lookup::Apex));
        for nx in [
            "service.consul.",
            "a.b.c.service.consul.",
            "a.b.c.d.e.service.consul.",
            "web.service.dc2.consul.",
            "zz.addr.consul.",
            "x.query.consul.",
            "a.b.node.consul.",
        ] {
            assert_eq!(labels(nx), Parsed::NoSuchName, "{nx}");
        }
        for out in [
            "example.com.",
            "consul.example.com.",
            ".",
            "web.service.consul.io.",
        ] {
            assert_eq!(labels(out), Parsed::Outside, "{out}");
        }
    }

    #[test]
    fn hex_addresses_round_trip() {
        for ip in ["10.1.2.3", "::1", "2001:db8::42"] {
            let ip: IpAddr = ip.parse().unwrap();
            let name = addr_name(ip);
            assert_eq!(
                parse_name(&name),
                Parsed::Lookup(Lookup::Addr(ip)),
                "{name}"
            );
        }
        assert_eq!(
            addr_name("127.0.0.1".parse().unwrap()).to_string(),
            "7f000001.addr.dc1.consul."
        );
        assert_eq!(parse_hex_ip("7f00001"), None);
        assert_eq!(parse_hex_ip("7f00000g"), None);
    }

    #[test]
    fn weights_and_limits() {
        assert_eq!(srv_weight(0.0), 1);
        assert_eq!(srv_weight(0.4), 1);
        assert_eq!(srv_weight(2.6), 3);
        assert_eq!(srv_weight(1e9), u16::MAX);
        assert_eq!(srv_weight(f64::NAN), 1);
        assert_eq!(udp_limit(None), 512);
        let mut e = Edns::new();
        e.set_max_payload(1232);
        assert_eq!(udp_limit(Some(&e)), 1232);
        e.set_max_payload(65000);
        assert_eq!(udp_limit(Some(&e)), 4096);
        e.set_max_payload(100);
        assert_eq!(udp_limit(Some(&e)), 512);
    }

    /// Service (`group/name` for a Nacos service in namespace `dev`), address, port,
    /// passing, tags, weight.
    type Spec<'a> = (&'a str, &'a str, u16, bool, &'a [&'a str], f64);

    async fn registry_with(instances: &[Spec<'_>]) -> Registry {
        let r = Registry::start(CoreOptions::default()).unwrap();
        for (service, ip, port, passing, tags, weight) in instances {
            let key = if let Some((group, name)) = service.split_once('/') {
                ServiceKey::new("dev", group, name.to_string())
            } else {
                ServiceKey::simple(*service)
            };
            let mut i = Instance::new(&key, *ip, *port, DEFAULT_CLUSTER);
            i.ephemeral = false;
            i.status = HealthStatus::from_healthy(*passing);
            i.tags = tags.iter().map(|t| t.to_string()).collect();
            i.weight = *weight;
            r.submit(Op::Register {
                service: key,
                instance: i,
            })
            .await
            .unwrap();
        }
        r
    }

    fn name(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    fn ips(answer: &Answer) -> Vec<String> {
        let mut v: Vec<String> = answer
            .answers
            .iter()
            .map(|r| match &r.data {
                RData::A(a) => a.0.to_string(),
                RData::AAAA(a) => a.0.to_string(),
                other => format!("{other:?}"),
            })
            .collect();
        v.sort();
        v
    }

    #[tokio::test]
    async fn records_follow_the_registry() {
        let r = registry_with(&[
            ("web", "10.0.0.1", 80, true, &["v1"], 1.0),
            ("web", "10.0.0.2", 81, false, &["v1"], 1.0),
            ("web", "10.0.0.3", 82, true, &["v2"], 5.0),
            ("web", "2001:db8::1", 83, true, &[], 1.0),
            ("web", "host.example", 84, true, &[], 1.0),
            ("down", "10.0.0.9", 80, false, &[], 1.0),
            ("shop/orders", "10.1.0.1", 90, true, &[], 1.0),
        ])
        .await;
        let d = DnsResolver::new(r, Duration::from_secs(7));
        let a = d.resolve(&name("web.service.consul."), RecordType::A);
        assert_eq!(a.code, ResponseCode::NoError);
        assert_eq!(ips(&a), ["10.0.0.1", "10.0.0.3"]);
        assert!(a.answers.iter().all(|r| r.ttl == 7));
        assert!(!a.soa);
        let aaaa = d.resolve(&name("web.service.consul."), RecordType::AAAA);
        assert_eq!(ips(&aaaa), ["2001:db8::1"]);
        let tagged = d.resolve(&name("v1.web.service.consul."), RecordType::A);
        assert_eq!(ips(&tagged), ["10.0.0.1"]);
        let rfc = d.resolve(&name("_web._v2.service.consul."), RecordType::A);
        assert_eq!(ips(&rfc), ["10.0.0.3"]);

        let srv = d.resolve(&name("_web._tcp.service.consul."), RecordType::SRV);
        assert_eq!(srv.answers.len(), 4);
        let mut seen: Vec<(u16, u16, String)> = srv
            .answers
            .iter()
            .map(|r| match &r.data {
                RData::SRV(s) => (s.port, s.weight, s.target.to_string()),
                other => panic!("{other:?}"),
            })
            .collect();
        seen.sort();
        assert_eq!(
            seen,
            [
                (80, 1, "0a000001.addr.dc1.consul.".to_string()),
                (82, 5, "0a000003.addr.dc1.consul.".to_string()),
                (
                    83,
                    1,
                    "20010db8000000000000000000000001.addr.dc1.consul.".to_string()
                ),
                (84, 1, "host.example.".to_string()),
            ]
        );
        assert!(srv.answers.iter().all(|r| match &r.data {
            RData::SRV(s) => s.priority == 1,
            _ => false,
        }));
        assert_eq!(srv.additionals.len(), 3);

        let txt = d.resolve(&name("web.service.consul."), RecordType::TXT);
        assert_eq!(
            (txt.code, txt.answers.len(), txt.soa),
            (ResponseCode::NoError, 0, true)
        );
        let down = d.resolve(&name("down.service.consul."), RecordType::A);
        assert_eq!((down.code, down.soa), (ResponseCode::NXDomain, true));
        let unknown = d.resolve(&name("nope.service.consul."), RecordType::A);
        assert_eq!(unknown.code, ResponseCode::NXDomain);
        let nacos = d.resolve(
            &name("orders.shop.dev.nacos.service.consul."),
            RecordType::A,
        );
        assert_eq!(ips(&nacos), ["10.1.0.1"]);
        // Not reachable by its Consul name.
        let plain = d.resolve(&name("orders.service.consul."), RecordType::A);
        assert_eq!(plain.code, ResponseCode::NXDomain);
        let node = d.resolve(&name("berth.node.consul."), RecordType::A);
        assert_eq!(ips(&node), ["127.0.0.1"]);
        let other = d.resolve(&name("other.node.consul."), RecordType::A);
        assert_eq!(other.code, ResponseCode::NXDomain);
        let addr = d.resolve(&name("0a000001.addr.dc1.consul."), RecordType::A);
        assert_eq!(ips(&addr), ["10.0.0.1"]);
        let refused = d.resolve(&name("example.com."), RecordType::A);
        assert_eq!((refused.code, refused.soa), (ResponseCode::Refused, false));
        let apex = d.resolve(&name("consul."), RecordType::SOA);
        assert_eq!(apex.answers.len(), 1);
    }

    /// Collects what the handler sends, encoded as hickory-server encodes UDP answers:
    /// to the response's EDNS payload size, 512 bytes without EDNS.
    #[derive(Clone, Default)]
    struct Capture(Arc<std::sync::Mutex<Vec<u8>>>);

    #[async_trait::async_trait]
    impl ResponseHandler for Capture {
        async fn send_response<'a>(
            &mut self,
            response: hickory_server::zone_handler::MessageResponse<
                '_,
                'a,
                impl Iterator<Item = &'a Record> + Send + 'a,
                impl Iterator<Item = &'a Record> + Send + 'a,
                impl Iterator<Item = &'a Record> + Send + 'a,
                impl Iterator<Item = &'a Record> + Send + 'a,
            >,
        ) -> Result<ResponseInfo, hickory_server::net::NetError> {
            let limit = response.edns().map_or(512, Edns::max_payload);
            let mut bytes = Vec::new();
            let mut encoder = BinEncoder::new(&mut bytes);
            encoder.set_max_size(limit);
            let info = response.destructive_emit(&mut encoder)?;
            *self.0.lock().unwrap() = bytes;
            Ok(info)
        }
    }

    /// Sends `qname`/`qtype` through the handler (advertising `edns` bytes if set).
    async fn ask(d: &DnsResolver, qname: &str, qtype: RecordType, edns: Option<u16>) -> Message {
        let mut q = Message::query();
        q.add_query(Query::query(name(qname), qtype));
        if let Some(size) = edns {
            let mut e = Edns::new();
            e.set_max_payload(size);
            q.set_edns(e);
        }
        let raw = q.to_vec().unwrap();
        ask_raw(d, raw).await.expect("an answer")
    }

    async fn ask_raw(d: &DnsResolver, raw: Vec<u8>) -> Option<Message> {
        let request = Request::from_bytes(
            raw,
            "127.0.0.1:5353".parse().unwrap(),
            hickory_server::net::xfer::Protocol::Udp,
        )
        .ok()?;
        let capture = Capture::default();
        let handler = DnsHandler::new(d.clone());
        handler
            .handle_request::<_, hickory_server::net::runtime::TokioTime>(&request, capture.clone())
            .await;
        let bytes = capture.0.lock().unwrap().clone();
        let mut decoder = hickory_proto::serialize::binary::BinDecoder::new(&bytes);
        let message = Message::read(&mut decoder).unwrap();
        // Nothing after the message (hickory's own cut leaves the partial record).
        assert!(
            decoder.is_empty(),
            "{} bytes after the message",
            decoder.len()
        );
        assert!(bytes.len() <= usize::from(udp_limit(request.edns.as_ref())));
        Some(message)
    }

    #[tokio::test]
    async fn large_answers_are_truncated_to_the_limit() {
        let many: Vec<(String, u16)> = (1..=60).map(|n| (format!("10.0.1.{n}"), 80)).collect();
        let list: Vec<Spec<'_>> = many
            .iter()
            .map(|(ip, port)| ("big", ip.as_str(), *port, true, &[][..], 1.0))
            .collect();
        let d = DnsResolver::new(registry_with(&list).await, Duration::ZERO);
        let a = d.resolve(&name("big.service.consul."), RecordType::A);
        assert_eq!(a.answers.len(), 60);
        let small = ask(&d, "big.service.consul.", RecordType::A, None).await;
        assert!(small.metadata.truncation);
        assert!(!small.answers.is_empty() && small.answers.len() < 60);
        // The EDNS0 size the query advertises is used.
        let edns = ask(&d, "big.service.consul.", RecordType::A, Some(4096)).await;
        assert!(!edns.metadata.truncation);
        assert_eq!(edns.answers.len(), 60);
        // SRV records and their additional A records, cut at 512 bytes.
        let srv = ask(&d, "big.service.consul.", RecordType::SRV, None).await;
        assert!(srv.metadata.truncation);
        assert!(srv.answers.len() < 60);
        // A size past 4096 is capped.
        let mut e = Edns::new();
        e.set_max_payload(65000);
        assert_eq!(udp_limit(Some(&e)), MAX_UDP_PAYLOAD);
    }

    #[tokio::test]
    async fn handler_answers_codes_and_soa() {
        let d = DnsResolver::new(
            registry_with(&[("web", "10.0.0.1", 80, true, &[], 1.0)]).await,
            Duration::ZERO,
        );
        let nx = ask(&d, "nope.service.consul.", RecordType::A, None).await;
        assert_eq!(nx.metadata.response_code, ResponseCode::NXDomain);
        assert!(nx.metadata.authoritative);
        assert_eq!(nx.authorities.len(), 1);
        assert_eq!(nx.authorities[0].record_type(), RecordType::SOA);
        let nodata = ask(&d, "web.service.consul.", RecordType::MX, None).await;
        assert_eq!(nodata.metadata.response_code, ResponseCode::NoError);
        assert!(nodata.answers.is_empty());
        assert_eq!(nodata.authorities.len(), 1);
        let refused = ask(&d, "example.com.", RecordType::A, None).await;
        assert_eq!(refused.metadata.response_code, ResponseCode::Refused);
        assert!(refused.authorities.is_empty());
        let srv = ask(&d, "web.service.consul.", RecordType::SRV, None).await;
        assert_eq!(srv.answers.len(), 1);
        assert_eq!(srv.additionals.len(), 1);
        assert_eq!(
            srv.additionals[0].name.to_string(),
            "0a000001.addr.dc1.consul."
        );
    }

    #[tokio::test]
    async fn answers_are_shuffled() {
        let many: Vec<String> = (1..=20).map(|n| format!("10.0.2.{n}")).collect();
        let list: Vec<Spec<'_>> = many
            .iter()
            .map(|ip| ("s", ip.as_str(), 80, true, &[][..], 1.0))
            .collect();
        let d = DnsResolver::new(registry_with(&list).await, Duration::ZERO);
        let first: Vec<Record> = d.resolve(&name("s.service.consul."), RecordType::A).answers;
        let differs =
            (0..20).any(|_| d.resolve(&name("s.service.consul."), RecordType::A).answers != first);
        assert!(differs, "20 answers came back in the same order 20 times");
    }

    #[tokio::test]
    async fn malformed_requests_are_dropped_or_refused() {
        let d = DnsResolver::new(registry_with(&[]).await, Duration::ZERO);
        for junk in [&b""[..], b"\x00", &[0xff; 13], &[0; 12]] {
            if let Some(answer) = ask_raw(&d, junk.to_vec()).await {
                assert_ne!(answer.metadata.response_code, ResponseCode::NoError);
            }
        }
        // Two questions in one query: FORMERR.
        let mut q = Message::query();
        q.add_query(Query::query(name("a.service.consul."), RecordType::A));
        q.add_query(Query::query(name("b.service.consul."), RecordType::A));
        let answer = ask_raw(&d, q.to_vec().unwrap()).await.unwrap();
        assert_eq!(answer.metadata.response_code, ResponseCode::FormErr);
    }

    #[test]
    fn any_datagram_or_name_is_answered_or_dropped_without_panic() {
        use proptest::prelude::*;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let d = rt.block_on(async {
            DnsResolver::new(
                registry_with(&[("web", "10.0.0.1", 80, true, &["v1"], 1.0)]).await,
                Duration::ZERO,
            )
        });
        let mut runner = proptest::test_runner::TestRunner::default();
        // Raw bytes, and well-formed headers followed by random bytes.
        let datagrams = prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..600),
            proptest::collection::vec(any::<u8>(), 0..200).prop_map(|tail| {
                let mut v = vec![0x12, 0x34, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0];
                v.extend(tail);
                v
            }),
        ];
        runner
            .run(&datagrams, |bytes| {
                rt.block_on(ask_raw(&d, bytes));
                Ok(())
            })
            .unwrap();
        let names = proptest::collection::vec("[a-zA-Z0-9_-]{0,12}", 0..7);
        runner
            .run(&names, |labels| {
                let _ = parse_labels(&labels);
                if let Ok(name) = Name::from_labels(labels.iter().map(|l| l.as_bytes())) {
                    for qtype in [
                        RecordType::A,
                        RecordType::AAAA,
                        RecordType::SRV,
                        RecordType::ANY,
                    ] {
                        let _ = d.resolve(&name, qtype);
                    }
                }
                Ok(())
            })
            .unwrap();
    }
}
