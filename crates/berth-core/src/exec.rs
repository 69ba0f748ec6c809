//! `berth exec`: what a user may ask to run inside an instance, and the frames of its
//! WebSocket between the CLI and the server.
//!
//! A command is an argument vector, never a shell line: the user's words reach `execve`
//! as they were typed, so nothing on the node re-parses them (`sh -c` is run only when
//! the user names it). The frames are typed here once so both ends agree on them; stdin
//! and output travel as binary frames (no encoding cost, any bytes), control as small
//! JSON text frames.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::validate::FieldError;

/// Longest argument vector and environment accepted, in elements.
pub const MAX_ARGS: usize = 1024;
/// Longest total size of the arguments and the environment, in bytes (Linux's own
/// `ARG_MAX` is larger, but a command line this long is a mistake).
pub const MAX_BYTES: usize = 128 * 1024;

/// What to run: the first frame of the socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecRequest {
    pub argv: Vec<String>,
    /// A pseudo-terminal instead of pipes (stdout and stderr then arrive as one stream).
    #[serde(default)]
    pub tty: bool,
    /// The terminal's size, with `tty`; 0 leaves the kernel's default.
    #[serde(default)]
    pub rows: u16,
    #[serde(default)]
    pub cols: u16,
    /// Added to (and overriding) the instance's own environment.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
}

impl ExecRequest {
    /// Refuses what `execve` could not take or what is surely a mistake, naming the field.
    pub fn validate(&self) -> Result<(), FieldError> {
        let problem = |field: String, message: &str, fix: &str| FieldError {
            field,
            message: message.to_string(),
            fix: fix.to_string(),
        };
        if self.argv.is_empty() {
            return Err(problem(
                "argv".into(),
                "is empty: there is no program to run",
                "name the program and its arguments, e.g. `berth exec APP -- printenv`",
            ));
        }
        if self.argv[0].is_empty() {
            return Err(problem(
                "argv[0]".into(),
                "is empty: it names the program to run",
                "give a program name or path",
            ));
        }
        if self.argv.len() + self.env.len() > MAX_ARGS {
            return Err(problem(
                "argv".into(),
                "has too many elements",
                &format!("give at most {MAX_ARGS} arguments and variables together"),
            ));
        }
        for (i, arg) in self.argv.iter().enumerate() {
            if arg.contains('\0') {
                return Err(problem(
                    format!("argv[{i}]"),
                    "contains a NUL character, which no program argument can hold",
                    "remove the NUL byte",
                ));
            }
        }
        for (key, value) in &self.env {
            let field = format!("env.{key}");
            if key.is_empty() || key.contains('=') || key.contains('\0') {
                return Err(problem(
                    field,
                    "is not a variable name",
                    "use a name without '=' or NUL, e.g. DEBUG",
                ));
            }
            if value.contains('\0') {
                return Err(problem(
                    field,
                    "contains a NUL character, which no variable can hold",
                    "remove the NUL byte",
                ));
            }
        }
        let bytes: usize = self.argv.iter().map(String::len).sum::<usize>()
            + self
                .env
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>();
        if bytes > MAX_BYTES {
            return Err(problem(
                "argv".into(),
                "is too long",
                &format!("keep the arguments and variables under {MAX_BYTES} bytes together"),
            ));
        }
        Ok(())
    }
}

/// Which output a chunk is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    fn tag(self) -> u8 {
        match self {
            Stream::Stdout => 1,
            Stream::Stderr => 2,
        }
    }
}

/// How the command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    Code(i32),
    Signal(i32),
}

impl ExitStatus {
    /// The exit code a shell would report: the code, or 128 + the signal.
    pub fn shell_code(self) -> i32 {
        match self {
            ExitStatus::Code(code) => code,
            ExitStatus::Signal(signal) => 128 + signal,
        }
    }
}

/// A WebSocket message, without a WebSocket library: each end converts its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wire {
    Text(String),
    Binary(Vec<u8>),
}

/// The client's frames after the first ([`ExecRequest`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientFrame {
    Stdin(Vec<u8>),
    /// No more stdin: the command's stdin is closed (with a terminal, an EOF character).
    Eof,
    Resize {
        rows: u16,
        cols: u16,
    },
}

/// The server's frames.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerFrame {
    /// The command runs, in this instance on this node.
    Started {
        instance: String,
        node: String,
    },
    Output(Stream, Vec<u8>),
    Exit(ExitStatus),
    /// It could not run, or the link broke; `field` names the request's culprit.
    Error {
        message: String,
        field: Option<String>,
    },
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum ClientControl {
    Eof,
    Resize { rows: u16, cols: u16 },
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum ServerControl {
    Started {
        instance: String,
        node: String,
    },
    Exit {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        code: Option<i32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        signal: Option<i32>,
    },
    Error {
        message: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        field: Option<String>,
    },
}

/// A frame the other end sent that is not one of these.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad exec frame: {0}")]
pub struct FrameError(pub String);

impl ExecRequest {
    pub fn encode(&self) -> Wire {
        Wire::Text(serde_json::to_string(self).unwrap_or_default())
    }

    pub fn decode(wire: &Wire) -> Result<Self, FrameError> {
        match wire {
            Wire::Text(text) => serde_json::from_str(text).map_err(|e| {
                FrameError(format!(
                    "the first frame must be {{\"argv\": [...], \"tty\", \"rows\", \"cols\", \"env\"}}: {e}"
                ))
            }),
            Wire::Binary(_) => Err(FrameError(
                "the first frame must be the JSON request, not binary data".into(),
            )),
        }
    }
}

impl ClientFrame {
    pub fn encode(&self) -> Wire {
        let control = match self {
            ClientFrame::Stdin(bytes) => return Wire::Binary(bytes.clone()),
            ClientFrame::Eof => ClientControl::Eof,
            ClientFrame::Resize { rows, cols } => ClientControl::Resize {
                rows: *rows,
                cols: *cols,
            },
        };
        Wire::Text(serde_json::to_string(&control).unwrap_or_default())
    }

    pub fn decode(wire: Wire) -> Result<Self, FrameError> {
        match wire {
            Wire::Binary(bytes) => Ok(ClientFrame::Stdin(bytes)),
            Wire::Text(text) => match serde_json::from_str(&text) {
                Ok(ClientControl::Eof) => Ok(ClientFrame::Eof),
                Ok(ClientControl::Resize { rows, cols }) => Ok(ClientFrame::Resize { rows, cols }),
                Err(e) => Err(FrameError(format!(
                    "a text frame must be {{\"type\":\"eof\"}} or {{\"type\":\"resize\",\"rows\":R,\"cols\":C}}: {e}"
                ))),
            },
        }
    }
}

impl ServerFrame {
    pub fn encode(&self) -> Wire {
        let control = match self {
            ServerFrame::Output(stream, bytes) => {
                let mut out = Vec::with_capacity(bytes.len() + 1);
                out.push(stream.tag());
                out.extend_from_slice(bytes);
                return Wire::Binary(out);
            }
            ServerFrame::Started { instance, node } => ServerControl::Started {
                instance: instance.clone(),
                node: node.clone(),
            },
            ServerFrame::Exit(ExitStatus::Code(code)) => ServerControl::Exit {
                code: Some(*code),
                signal: None,
            },
            ServerFrame::Exit(ExitStatus::Signal(signal)) => ServerControl::Exit {
                code: None,
                signal: Some(*signal),
            },
            ServerFrame::Error { message, field } => ServerControl::Error {
                message: message.clone(),
                field: field.clone(),
            },
        };
        Wire::Text(serde_json::to_string(&control).unwrap_or_default())
    }

    pub fn decode(wire: Wire) -> Result<Self, FrameError> {
        match wire {
            Wire::Binary(bytes) => {
                let stream = match bytes.first() {
                    Some(1) => Stream::Stdout,
                    Some(2) => Stream::Stderr,
                    other => {
                        return Err(FrameError(format!(
                            "an output frame starts with 1 (stdout) or 2 (stderr), not {other:?}"
                        )));
                    }
                };
                Ok(ServerFrame::Output(stream, bytes[1..].to_vec()))
            }
            Wire::Text(text) => {
                let control: ServerControl = serde_json::from_str(&text)
                    .map_err(|e| FrameError(format!("unknown control frame {text:?}: {e}")))?;
                Ok(match control {
                    ServerControl::Started { instance, node } => {
                        ServerFrame::Started { instance, node }
                    }
                    ServerControl::Exit {
                        code: Some(code),
                        signal: None,
                    } => ServerFrame::Exit(ExitStatus::Code(code)),
                    ServerControl::Exit {
                        code: None,
                        signal: Some(signal),
                    } => ServerFrame::Exit(ExitStatus::Signal(signal)),
                    ServerControl::Exit { .. } => {
                        return Err(FrameError(format!(
                            "an exit frame has either a code or a signal: {text:?}"
                        )));
                    }
                    ServerControl::Error { message, field } => {
                        ServerFrame::Error { message, field }
                    }
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(argv: &[&str]) -> ExecRequest {
        ExecRequest {
            argv: argv.iter().map(|s| s.to_string()).collect(),
            tty: false,
            rows: 0,
            cols: 0,
            env: BTreeMap::new(),
        }
    }

    #[test]
    fn an_empty_argv_is_refused_naming_the_field() {
        let err = request(&[]).validate().unwrap_err();
        assert_eq!(err.field, "argv");
        assert!(err.to_string().contains("berth exec APP -- "), "{err}");
        assert_eq!(request(&[""]).validate().unwrap_err().field, "argv[0]");
    }

    #[test]
    fn a_nul_in_an_argument_or_variable_is_refused_naming_it() {
        let err = request(&["echo", "a\0b"]).validate().unwrap_err();
        assert_eq!(err.field, "argv[1]");
        assert!(err.message.contains("NUL"), "{err}");
        let mut req = request(&["env"]);
        req.env.insert("A".into(), "x\0".into());
        assert_eq!(req.validate().unwrap_err().field, "env.A");
        let mut req = request(&["env"]);
        req.env.insert("A=B".into(), "x".into());
        assert_eq!(req.validate().unwrap_err().field, "env.A=B");
    }

    #[test]
    fn oversized_requests_are_refused_and_ordinary_ones_pass() {
        assert!(request(&["sh", "-c", "exit 3"]).validate().is_ok());
        let many: Vec<&str> = std::iter::repeat_n("x", MAX_ARGS + 1).collect();
        assert_eq!(request(&many).validate().unwrap_err().field, "argv");
        let long = "y".repeat(MAX_BYTES + 1);
        assert!(request(&["echo", &long]).validate().is_err());
    }

    #[test]
    fn the_request_round_trips_and_accepts_the_short_form() {
        let mut req = request(&["printenv", "HOME"]);
        req.tty = true;
        req.rows = 40;
        req.cols = 100;
        req.env.insert("DEBUG".into(), "1".into());
        assert_eq!(ExecRequest::decode(&req.encode()).unwrap(), req);
        let short = ExecRequest::decode(&Wire::Text(r#"{"argv":["ls"]}"#.into())).unwrap();
        assert_eq!(short, request(&["ls"]));
        let err = ExecRequest::decode(&Wire::Text(r#"{"argv":["ls"],"shell":"x"}"#.into()));
        assert!(err.unwrap_err().0.contains("shell"));
        assert!(ExecRequest::decode(&Wire::Binary(b"ls".to_vec())).is_err());
    }

    #[test]
    fn client_frames_round_trip_and_unknown_ones_are_refused() {
        for frame in [
            ClientFrame::Stdin(b"hello\n\0\xff".to_vec()),
            ClientFrame::Eof,
            ClientFrame::Resize {
                rows: 50,
                cols: 120,
            },
        ] {
            assert_eq!(ClientFrame::decode(frame.encode()).unwrap(), frame);
        }
        assert_eq!(
            ClientFrame::Resize { rows: 2, cols: 3 }.encode(),
            Wire::Text(r#"{"type":"resize","rows":2,"cols":3}"#.into())
        );
        let err = ClientFrame::decode(Wire::Text(r#"{"type":"kill"}"#.into())).unwrap_err();
        assert!(err.0.contains("resize"), "{err}");
    }

    #[test]
    fn server_frames_round_trip_and_bad_ones_are_refused() {
        for frame in [
            ServerFrame::Started {
                instance: "i-1".into(),
                node: "n".into(),
            },
            ServerFrame::Output(Stream::Stdout, b"out".to_vec()),
            ServerFrame::Output(Stream::Stderr, vec![]),
            ServerFrame::Exit(ExitStatus::Code(3)),
            ServerFrame::Exit(ExitStatus::Signal(9)),
            ServerFrame::Error {
                message: "no".into(),
                field: Some("argv".into()),
            },
            ServerFrame::Error {
                message: "gone".into(),
                field: None,
            },
        ] {
            assert_eq!(ServerFrame::decode(frame.encode()).unwrap(), frame);
        }
        assert_eq!(
            ServerFrame::Output(Stream::Stderr, b"e".to_vec()).encode(),
            Wire::Binary(vec![2, b'e'])
        );
        assert!(ServerFrame::decode(Wire::Binary(vec![])).is_err());
        assert!(ServerFrame::decode(Wire::Binary(vec![7, 1])).is_err());
        let both = Wire::Text(r#"{"type":"exit","code":1,"signal":2}"#.into());
        assert!(ServerFrame::decode(both).is_err());
        assert_eq!(ExitStatus::Signal(9).shell_code(), 137);
    }
}
