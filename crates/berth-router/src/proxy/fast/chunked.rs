//! Finds where a chunked body (RFC 9112 §7.1) ends so it can be relayed verbatim: chunk
//! sizes, extensions and trailers pass through untouched, nothing is re-encoded.

/// Trailer sections larger than this are refused.
const MAX_TRAILERS: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Size { digits: u8 },
    Extension,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    TrailerStart,
    TrailerLine,
    TrailerLf,
    EndLf,
    Done,
}

#[derive(Debug)]
pub struct Decoder {
    state: State,
    /// Size of the chunk being read, then the bytes of it still to come.
    left: u64,
    data: u64,
    trailers: usize,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder {
            state: State::Size { digits: 0 },
            left: 0,
            data: 0,
            trailers: 0,
        }
    }
}

impl Decoder {
    /// Consumes bytes of `input` up to the end of the body; returns how many belong to it.
    /// Bytes after the end are left for the caller (they are not part of this message).
    pub fn feed(&mut self, input: &[u8]) -> Result<usize, &'static str> {
        let mut i = 0;
        while i < input.len() && self.state != State::Done {
            let b = input[i];
            match self.state {
                State::Size { digits } => {
                    if let Some(d) = (b as char).to_digit(16) {
                        if digits >= 15 {
                            return Err("chunk size too large");
                        }
                        self.left = self.left * 16 + u64::from(d);
                        self.state = State::Size { digits: digits + 1 };
                    } else if digits == 0 {
                        return Err("chunk size expected");
                    } else if b == b';' || b == b' ' || b == b'\t' {
                        self.state = State::Extension;
                    } else if b == b'\r' {
                        self.state = State::SizeLf;
                    } else {
                        return Err("invalid chunk size");
                    }
                }
                State::Extension => {
                    if b == b'\r' {
                        self.state = State::SizeLf;
                    } else if b == b'\n' {
                        return Err("bare LF in chunk extension");
                    }
                }
                State::SizeLf => {
                    if b != b'\n' {
                        return Err("CRLF expected after chunk size");
                    }
                    self.state = if self.left == 0 {
                        State::TrailerStart
                    } else {
                        State::Data
                    };
                }
                State::Data => {
                    let take =
                        (input.len() - i).min(usize::try_from(self.left).unwrap_or(usize::MAX));
                    self.left -= take as u64;
                    self.data += take as u64;
                    i += take;
                    if self.left == 0 {
                        self.state = State::DataCr;
                    }
                    continue;
                }
                State::DataCr => {
                    if b != b'\r' {
                        return Err("CRLF expected after chunk data");
                    }
                    self.state = State::DataLf;
                }
                State::DataLf => {
                    if b != b'\n' {
                        return Err("CRLF expected after chunk data");
                    }
                    self.state = State::Size { digits: 0 };
                }
                State::TrailerStart => {
                    self.state = if b == b'\r' {
                        State::EndLf
                    } else {
                        State::TrailerLine
                    };
                }
                State::TrailerLine => {
                    self.trailers += 1;
                    if self.trailers > MAX_TRAILERS {
                        return Err("trailer section too large");
                    }
                    if b == b'\r' {
                        self.state = State::TrailerLf;
                    }
                }
                State::TrailerLf => {
                    if b != b'\n' {
                        return Err("CRLF expected after a trailer");
                    }
                    self.state = State::TrailerStart;
                }
                State::EndLf => {
                    if b != b'\n' {
                        return Err("CRLF expected at the end of a chunked body");
                    }
                    self.state = State::Done;
                }
                State::Done => {}
            }
            i += 1;
        }
        Ok(i)
    }

    pub fn done(&self) -> bool {
        self.state == State::Done
    }

    /// Payload bytes seen so far (without chunk framing).
    pub fn data_bytes(&self) -> u64 {
        self.data
    }
}

/// Writes `data` as one chunk (used to re-frame close-delimited bodies).
pub fn push_chunk(out: &mut Vec<u8>, data: &[u8]) {
    if data.is_empty() {
        return;
    }
    out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_end_byte_by_byte_and_whole() {
        let body = b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\nNEXT";
        let mut whole = Decoder::default();
        assert_eq!(whole.feed(body).unwrap(), body.len() - 4);
        assert!(whole.done());
        assert_eq!(whole.data_bytes(), 11);
        let mut bytewise = Decoder::default();
        let mut used = 0;
        for b in body.chunks(1) {
            used += bytewise.feed(b).unwrap();
            if bytewise.done() {
                break;
            }
        }
        assert_eq!(used, body.len() - 4);
        assert_eq!(bytewise.data_bytes(), 11);
    }

    #[test]
    fn malformed_bodies_are_refused() {
        for bad in [&b"zz\r\n"[..], b"5\r\nhelloXX", b"\r\n", b"5\nhello"] {
            assert!(Decoder::default().feed(bad).is_err(), "{bad:?}");
        }
        assert!(Decoder::default().feed(b"ffffffffffffffffff\r\n").is_err());
    }

    #[test]
    fn chunks_are_written_in_hex() {
        let mut out = Vec::new();
        push_chunk(&mut out, &[b'a'; 26]);
        assert_eq!(&out[..4], b"1a\r\n");
        assert!(out.ends_with(b"a\r\n"));
    }
}
