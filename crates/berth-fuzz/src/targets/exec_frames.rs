//! The exec WebSocket's frames as the server reads them from a client: the first frame
//! (`ExecRequest::decode`, then `validate`) and every later one (`ClientFrame::decode`). A
//! leading byte picks text (even) or binary (odd), the rest is the frame.

use berth_core::exec::{ClientFrame, ExecRequest, Wire};

/// One input: parsed, and what came out checked against what must hold.
pub fn run(data: &[u8]) {
    let Some((kind, body)) = data.split_first() else {
        return;
    };
    let wire = if kind % 2 == 0 {
        match std::str::from_utf8(body) {
            Ok(text) => Wire::Text(text.to_string()),
            Err(_) => return,
        }
    } else {
        Wire::Binary(body.to_vec())
    };
    match ExecRequest::decode(&wire) {
        Ok(request) => {
            if request.validate().is_ok() {
                assert!(!request.argv.is_empty(), "an empty argv validated");
                assert!(
                    request.argv.iter().all(|a| !a.contains('\0')),
                    "a NUL in argv validated"
                );
            }
            assert_eq!(
                ExecRequest::decode(&request.encode()).as_ref(),
                Ok(&request)
            );
        }
        Err(e) => assert!(!e.0.is_empty()),
    }
    match ClientFrame::decode(wire.clone()) {
        Ok(frame) => assert_eq!(ClientFrame::decode(frame.encode()), Ok(frame)),
        Err(e) => {
            assert!(matches!(wire, Wire::Text(_)), "binary is always stdin");
            assert!(!e.0.is_empty());
        }
    }
}
