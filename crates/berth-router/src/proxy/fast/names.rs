//! Header names the fast path treats specially, recognised without allocating (length
//! first, then a case-insensitive compare).

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Name {
    Host,
    ContentLength,
    TransferEncoding,
    Expect,
    Upgrade,
    Connection,
    KeepAlive,
    ProxyConnection,
    ProxyAuthenticate,
    ProxyAuthorization,
    Te,
    Trailer,
    XForwardedFor,
    XForwardedProto,
    XForwardedHost,
    XRequestStart,
    XRequestId,
    Cookie,
    SetCookie,
    Date,
    Other,
}

pub fn classify(name: &str) -> Name {
    let is = |n: &str| name.eq_ignore_ascii_case(n);
    match name.len() {
        2 if is("te") => Name::Te,
        4 if is("host") => Name::Host,
        4 if is("date") => Name::Date,
        6 if is("cookie") => Name::Cookie,
        6 if is("expect") => Name::Expect,
        7 if is("upgrade") => Name::Upgrade,
        7 if is("trailer") => Name::Trailer,
        10 if is("connection") => Name::Connection,
        10 if is("keep-alive") => Name::KeepAlive,
        10 if is("set-cookie") => Name::SetCookie,
        12 if is("x-request-id") => Name::XRequestId,
        14 if is("content-length") => Name::ContentLength,
        15 if is("x-forwarded-for") => Name::XForwardedFor,
        15 if is("x-request-start") => Name::XRequestStart,
        16 if is("proxy-connection") => Name::ProxyConnection,
        16 if is("x-forwarded-host") => Name::XForwardedHost,
        17 if is("transfer-encoding") => Name::TransferEncoding,
        17 if is("x-forwarded-proto") => Name::XForwardedProto,
        18 if is("proxy-authenticate") => Name::ProxyAuthenticate,
        19 if is("proxy-authorization") => Name::ProxyAuthorization,
        _ => Name::Other,
    }
}

/// Hop-by-hop headers (RFC 9110 §7.6.1) never forwarded as received. `TE: trailers` is the
/// exception callers handle (it is end-to-end in practice).
pub fn is_hop_by_hop(n: Name) -> bool {
    matches!(
        n,
        Name::Connection
            | Name::KeepAlive
            | Name::ProxyConnection
            | Name::ProxyAuthenticate
            | Name::ProxyAuthorization
            | Name::Te
            | Name::Trailer
            | Name::TransferEncoding
            | Name::Upgrade
    )
}

/// The comma-separated tokens of a header value, trimmed, empty ones skipped.
pub fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|b| *b == b',')
        .map(|t| t.trim_ascii())
        .filter(|t| !t.is_empty())
}

/// A `Content-Length` value: digits only, as RFC 9110 §8.6 requires.
pub fn content_length(value: &[u8]) -> Option<u64> {
    if value.is_empty() || value.len() > 19 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(value.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_recognised_in_any_case() {
        assert_eq!(classify("Content-Length"), Name::ContentLength);
        assert_eq!(classify("X-FORWARDED-FOR"), Name::XForwardedFor);
        assert_eq!(classify("te"), Name::Te);
        assert_eq!(classify("x-custom"), Name::Other);
    }

    #[test]
    fn content_length_is_digits_only() {
        assert_eq!(content_length(b"42"), Some(42));
        assert_eq!(content_length(b""), None);
        assert_eq!(content_length(b"+4"), None);
        assert_eq!(content_length(b"4 2"), None);
        assert_eq!(content_length(b"99999999999999999999"), None);
    }

    #[test]
    fn tokens_are_trimmed() {
        let t: Vec<&[u8]> = tokens(b" close , ,X-Hop").collect();
        assert_eq!(t, vec![&b"close"[..], &b"X-Hop"[..]]);
    }
}
