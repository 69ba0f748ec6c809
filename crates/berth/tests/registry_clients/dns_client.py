"""dnspython against the registry's Consul DNS interface: a 60-instance answer is cut
over UDP (TC) and whole over TCP (udp_with_fallback, tcp), SRV additional records, and a
Nacos ephemeral instance that stops beating leaves the A answers.
Arguments: HTTP address, DNS address."""
import json
import sys
import time

import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype

from common import http, wait_until

http_addr = sys.argv[1]
dns_host, dns_port = sys.argv[2].rsplit(":", 1)
dns_port = int(dns_port)


def query(name, rdtype, edns=-1, payload=1232):
    return dns.message.make_query(name, rdtype, use_edns=edns, payload=payload)


def raw_udp(q):
    """Sends q over UDP; the answer and its size on the wire."""
    import socket
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(2)
        sock.sendto(q.to_wire(), (dns_host, dns_port))
        data = sock.recv(65535)
    return dns.message.from_wire(data), len(data)


def records(resp, rdtype):
    return [rr for rrset in resp.answer if rrset.rdtype == rdtype for rr in rrset]


for n in range(1, 61):
    body = json.dumps({"Name": "many", "ID": "many-%d" % n, "Address": "10.3.0.%d" % n, "Port": 9000 + n}).encode()
    status, _, text = http(http_addr, "PUT", "/v1/agent/service/register", body)
    assert status == 200, (status, text)

# UDP without EDNS: cut to 512 bytes with TC.
udp = dns.query.udp(query("many.service.consul.", "A"), dns_host, port=dns_port, timeout=2)
assert udp.flags & dns.flags.TC, udp
assert 0 < len(records(udp, dns.rdatatype.A)) < 60, udp
udp, size = raw_udp(query("many.service.consul.", "A"))
assert udp.flags & dns.flags.TC and size <= 512, (size, udp)
# The fallback retries over TCP and gets all 60.
resp, used_tcp = dns.query.udp_with_fallback(query("many.service.consul.", "A"), dns_host, port=dns_port, timeout=2)
assert used_tcp, "expected a TCP retry"
assert len(records(resp, dns.rdatatype.A)) == 60, resp
tcp = dns.query.tcp(query("many.service.consul.", "SRV"), dns_host, port=dns_port, timeout=2)
srv = records(tcp, dns.rdatatype.SRV)
assert len(srv) == 60 and not tcp.flags & dns.flags.TC, tcp
assert all(r.priority == 1 and r.weight == 1 and 9001 <= r.port <= 9060 for r in srv), srv
targets = {str(r.target) for r in srv}
additional = {str(rrset.name) for rrset in tcp.additional if rrset.rdtype == dns.rdatatype.A}
assert targets == additional and len(targets) == 60, (targets, additional)
# EDNS0 asking for 1232 bytes gets at most that, TC set (60 SRV + A do not fit).
edns, size = raw_udp(query("many.service.consul.", "SRV", edns=0, payload=1232))
assert edns.flags & dns.flags.TC and 512 < size <= 1232, (size, edns)
# Each SRV record that made it has its A record.
targets = {str(r.target) for r in records(edns, dns.rdatatype.SRV)}
additional = {str(rrset.name) for rrset in edns.additional if rrset.rdtype == dns.rdatatype.A}
assert targets and targets == additional, (targets, additional)
# ... and 4096 bytes take the 60 A records at once.
big = dns.query.udp(query("many.service.consul.", "A", edns=0, payload=4096), dns_host, port=dns_port, timeout=2)
assert not big.flags & dns.flags.TC and len(records(big, dns.rdatatype.A)) == 60, big

# A Nacos ephemeral instance (the registry runs with --beat-timeout 1s) answers while
# it beats, then drops out of the A answers once it stops.
status, _, text = http(http_addr, "POST", "/nacos/v1/ns/instance?serviceName=eph&ip=10.4.0.1&port=80&ephemeral=true")
assert status == 200, (status, text)
status, _, text = http(http_addr, "POST", "/nacos/v1/ns/instance?serviceName=eph&ip=10.4.0.2&port=80&ephemeral=true")
assert status == 200, (status, text)


def eph():
    resp = dns.query.udp(query("eph.service.consul.", "A"), dns_host, port=dns_port, timeout=2)
    return sorted(r.address for r in records(resp, dns.rdatatype.A)), resp.rcode()


beat = json.dumps({"ip": "10.4.0.2", "port": 80, "serviceName": "DEFAULT_GROUP@@eph", "cluster": "DEFAULT"})
started = time.monotonic()
# Only 10.4.0.2 beats; 10.4.0.1 goes unhealthy after about a second.
def only_second():
    http(http_addr, "PUT", "/nacos/v1/ns/instance/beat?serviceName=eph&beat=" + urllib_quote(beat))
    return eph() == (["10.4.0.2"], dns.rcode.NOERROR)


def urllib_quote(s):
    import urllib.parse
    return urllib.parse.quote(s)


assert eph()[0] == ["10.4.0.1", "10.4.0.2"], eph()
wait_until("10.4.0.1 to leave the A answers", only_second, timeout=5)
assert time.monotonic() - started > 0.5
# Once nothing beats, the name has no passing instance: NXDOMAIN.
wait_until("eph to be NXDOMAIN", lambda: eph()[1] == dns.rcode.NXDOMAIN, timeout=5)
print("OK")
