//! The remote-command channel protocol of `kubectl exec` and `kubectl attach` over WebSocket
//! (`v4.channel.k8s.io`, `v5.channel.k8s.io`): every binary message starts with a channel byte —
//! 0 stdin, 1 stdout, 2 stderr, 3 error (the final `Status`), 4 resize (`{"Width","Height"}`) —
//! and v5 adds 255, "close": `[255, channel]` ends the client's stdin.
//!
//! What it owns: encoding and decoding those messages and the final `Status` documents, pure
//! and unit-tested. What it does not: sockets or processes (`exec` drives a session).

use serde_json::{Value, json};

use crate::runtime::TerminalSize;

pub const STDIN: u8 = 0;
pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;
pub const ERROR: u8 = 3;
pub const RESIZE: u8 = 4;
/// v5 only: the payload names a channel the client will not write to again.
pub const CLOSE: u8 = 255;

pub const V5: &str = "v5.channel.k8s.io";
pub const V4: &str = "v4.channel.k8s.io";
/// The subprotocols served, in order of preference.
pub const PROTOCOLS: &[&str] = &[V5, V4];

/// A message for `channel`.
pub fn frame(channel: u8, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 1);
    out.push(channel);
    out.extend_from_slice(data);
    out
}

/// What a client message means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    Stdin(Vec<u8>),
    /// No more stdin (v5 close signal).
    StdinClosed,
    Resize(TerminalSize),
    /// Empty messages, closes of other channels, data on output channels.
    Ignored,
}

/// Decodes a client message.
pub fn decode(message: &[u8]) -> Result<Inbound, String> {
    let Some((&channel, data)) = message.split_first() else { return Ok(Inbound::Ignored) };
    Ok(match channel {
        STDIN => Inbound::Stdin(data.to_vec()),
        CLOSE if data.first() == Some(&STDIN) => Inbound::StdinClosed,
        RESIZE => {
            Inbound::Resize(serde_json::from_slice(data).map_err(|e| format!("invalid terminal size {data:?}: {e}"))?)
        }
        _ => Inbound::Ignored,
    })
}

fn status(body: Value) -> Vec<u8> {
    let mut doc = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}});
    if let (Some(doc), Some(body)) = (doc.as_object_mut(), body.as_object()) {
        doc.extend(body.clone());
    }
    doc.to_string().into_bytes()
}

/// The error-channel document of a command that exited with `code`.
pub fn exit_status(argv: &[String], code: i32) -> Vec<u8> {
    if code == 0 {
        return status(json!({"status": "Success"}));
    }
    status(json!({
        "status": "Failure",
        "reason": "NonZeroExitCode",
        "message": format!("command terminated with non-zero exit code: error executing command {argv:?}, exit code {code}"),
        "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
    }))
}

/// The error-channel document of a session that could not run: kubectl prints `message`.
pub fn failure_status(reason: &str, message: &str) -> Vec<u8> {
    status(json!({"status": "Failure", "reason": reason, "message": message, "code": 500}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_messages() {
        assert_eq!(decode(&frame(STDIN, b"ls\n")), Ok(Inbound::Stdin(b"ls\n".to_vec())));
        assert_eq!(decode(&[CLOSE, STDIN]), Ok(Inbound::StdinClosed));
        assert_eq!(decode(&[CLOSE, STDOUT]), Ok(Inbound::Ignored));
        assert_eq!(decode(&[]), Ok(Inbound::Ignored));
        assert_eq!(
            decode(&frame(RESIZE, br#"{"Width":120,"Height":40}"#)),
            Ok(Inbound::Resize(TerminalSize { width: 120, height: 40 }))
        );
        assert!(decode(&frame(RESIZE, b"{")).is_err());
    }

    #[test]
    fn final_statuses_as_client_go_reads_them() {
        let ok: Value = serde_json::from_slice(&exit_status(&[], 0)).expect("json");
        assert_eq!(ok["status"], "Success");
        let argv = vec!["sh".to_string(), "-c".to_string(), "exit 3".to_string()];
        let failed: Value = serde_json::from_slice(&exit_status(&argv, 3)).expect("json");
        assert_eq!(failed["reason"], "NonZeroExitCode");
        assert_eq!(failed["details"]["causes"][0], json!({"reason": "ExitCode", "message": "3"}));
        let err: Value = serde_json::from_slice(&failure_status("NotSupported", "no")).expect("json");
        assert_eq!((err["status"].as_str(), err["message"].as_str()), (Some("Failure"), Some("no")));
        assert_eq!(frame(ERROR, b"x"), vec![3, b'x']);
    }
}
