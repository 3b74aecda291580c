//! What sslsniff says on stderr: start-up lines, warnings, notices and the summary.
//!
//! stderr is read by people and by programs (tests, the benchmark, scripts). People get
//! prose; `--status json` gives programs one JSON object per line instead, with a
//! `type` field, so that nobody has to parse sentences (schema in the README). Every
//! string that comes from the traced side (paths, names) is escaped before a terminal
//! sees it.

use std::io::Write;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::escape::escape_inline;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Status {
    #[default]
    Text,
    Json,
}

static STATUS: OnceLock<Status> = OnceLock::new();

/// Chosen once, before the first line is written.
pub fn set_status(status: Status) {
    let _ = STATUS.set(status);
}

fn json_mode() -> bool {
    STATUS.get() == Some(&Status::Json)
}

/// One line on stderr, written whole; a closed stderr is not worth dying for.
fn line(text: &str) {
    let mut err = std::io::stderr().lock();
    let _ = err.write_all(text.as_bytes());
    let _ = err.write_all(b"\n");
}

fn emit(kind: &str, prose: impl FnOnce() -> String, fields: serde_json::Value) {
    if json_mode() {
        let mut obj = fields;
        obj["type"] = kind.into();
        line(&obj.to_string());
    } else {
        line(&format!("sslsniff: {}", prose()));
    }
}

/// Text from the traced side, made safe for a terminal and kept on one line.
pub fn safe(bytes: &[u8]) -> String {
    let mut out = Vec::with_capacity(bytes.len());
    // Writing into a Vec cannot fail.
    let _ = escape_inline(&mut out, bytes);
    String::from_utf8_lossy(&out).into_owned()
}

/// A path from the traced side (its bytes need not be UTF-8), made safe likewise.
pub fn safe_path(path: &std::path::Path) -> String {
    safe(path.as_os_str().as_encoded_bytes())
}

/// Something optional is missing, or something was dropped; the tool goes on.
pub fn warn(message: &str) {
    emit(
        "warning",
        || format!("warning: {message}"),
        json!({ "message": message }),
    );
}

/// `warning!("...", args)`: a warning built with format arguments.
macro_rules! warning {
    ($($arg:tt)*) => {
        $crate::diag::warn(&format!($($arg)*))
    };
}
pub(crate) use warning;

/// Bytes the ring buffer could not take since the last report.
pub fn undelivered(bytes: u64) {
    loss(
        format!("{bytes} bytes undelivered: the ring buffer was full (raise --ring-buffer-size or lower --max-buffer-size)"),
        "undelivered_bytes",
        bytes,
    );
}

/// Payload bytes left out of stdout since the last report because it could not keep up.
pub fn output_behind(bytes: u64) {
    loss(
        format!("{bytes} bytes undelivered: the output fell behind (the reader of stdout or the disk is slower than the traffic)"),
        "undelivered_bytes",
        bytes,
    );
}

/// Payload bytes left out of the --pcap file since the last report because it could
/// not keep up. A field of their own: `undelivered_bytes` counts stdout's.
pub fn pcap_behind(bytes: u64) {
    loss(
        format!("{bytes} bytes undelivered to the --pcap file: it fell behind (the disk is slower than the traffic)"),
        "pcap_undelivered_bytes",
        bytes,
    );
}

/// A warning of bytes lost, with their count in `field` for programs.
fn loss(message: String, field: &str, bytes: u64) {
    let mut fields = json!({ "message": message });
    fields[field] = bytes.into();
    emit("warning", || format!("warning: {message}"), fields);
}

/// The fatal error that ends the run, on one line.
pub fn error(e: &anyhow::Error) {
    let message = format!("{e:#}");
    emit("error", || message.clone(), json!({ "message": message }));
}

/// Something the user should know that is neither a problem nor a capture (a traced
/// process exited).
pub fn notice(message: &str) {
    emit(
        "notice",
        || message.to_string(),
        json!({ "message": message }),
    );
}

/// A file now traced: where, as which library, which functions, and what revealed it.
#[derive(Debug, Serialize)]
pub struct Tracing {
    pub path: String,
    pub library: &'static str,
    pub functions: Vec<&'static str>,
    /// The process whose mapping or start revealed the file, when one did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comm: Option<String>,
    /// Time from the revealing event to attached, with -d.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_us: Option<u64>,
    /// Of which the wait in the queue and the examination of the file, with -d.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub examined_us: Option<u64>,
    /// How the functions of a file without TLS symbols were found.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub found_by: Option<String>,
    /// The revealing process was held until attached: its first call is captured.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub held: bool,
}

pub fn tracing(t: &Tracing) {
    emit(
        "tracing",
        || {
            let mut s = format!(
                "tracing {} ({}): {}",
                t.path,
                t.library,
                t.functions.join(" ")
            );
            if let (Some(pid), Some(comm)) = (t.pid, &t.comm) {
                s.push_str(&format!(" [pid {pid} {comm}]"));
            }
            if let Some(us) = t.latency_us {
                s.push_str(&format!(" (attached {us} us after it was seen)"));
            }
            if t.held {
                s.push_str(" (held until attached)");
            }
            if let Some(how) = &t.found_by {
                s.push_str(&format!("; found by {how}"));
            }
            s
        },
        serde_json::to_value(t).unwrap_or_default(),
    );
}

/// What a kernel feature is used for here: its own mechanism, or the fallback.
#[derive(Debug, Clone, Serialize)]
pub struct Mechanism {
    pub feature: &'static str,
    /// The feature is used (not missing, nor turned off by SSLSNIFF_WITHOUT).
    pub native: bool,
    pub uses: &'static str,
}

/// One set of mechanisms that `--check-kernel` loaded, or could not.
#[derive(Debug, Clone)]
pub struct VariantCheck {
    pub name: String,
    pub error: Option<String>,
    pub millis: u64,
}

/// Which mechanism each kernel feature uses: with -d as prose, and always with
/// `--status json` (programs that read it want to know what they are testing).
pub fn kernel(mechanisms: &[Mechanism], debug: bool) {
    if json_mode() {
        line(&json!({ "type": "kernel", "features": mechanisms }).to_string());
    } else if debug {
        for m in mechanisms {
            let how = if m.native { "with" } else { "without" };
            line(&format!("sslsniff: {how} {}: {}", m.feature, m.uses));
        }
    }
}

/// One program variant that `--check-kernel` loaded, or could not.
pub fn variant(v: &VariantCheck) {
    emit(
        "variant",
        || match &v.error {
            None => format!("loaded: {} ({} ms)", v.name, v.millis),
            Some(e) => format!("failed: {}: {e}", v.name),
        },
        json!({ "name": v.name, "loaded": v.error.is_none(), "error": v.error, "millis": v.millis }),
    );
}

/// The probes are attached: what happens from now on is captured.
pub fn ready() {
    emit("ready", || "ready; Ctrl-C to stop".into(), json!({}));
}

/// What a run saw, printed at exit. Events and bytes are stdout's; the --pcap file's,
/// which differ when one of the two fell behind, are in `pcap_file`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// Successful calls the kernel saw (after the filters).
    pub calls: u64,
    pub events: u64,
    /// Payload bytes printed.
    pub captured_bytes: u64,
    /// Bytes beyond --max-buffer-size, never captured.
    pub truncated_bytes: u64,
    /// Captured bytes that did not reach the output (the ring buffer was full, or an
    /// output fell behind): those of calls marked INCOMPLETE plus `unannounced_bytes`.
    pub undelivered_bytes: u64,
    /// Of those, bytes of calls that never reached user space at all.
    pub unannounced_bytes: u64,
    /// Of those, bytes dropped because an output (the reader of stdout, the disk) fell
    /// behind and its queue was full.
    #[serde(default)]
    pub dropped_bytes: u64,
    /// Calls not traced at all: the per-thread table of kernels without task storage
    /// was full.
    pub untracked_calls: u64,
    /// Records that failed validation and were dropped.
    pub malformed_records: u64,
    /// With --pcap FILE: what the file holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pcap_file: Option<Delivered>,
}

/// What one output holds of the events handed to it.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivered {
    pub events: u64,
    pub captured_bytes: u64,
    /// As `Summary::undelivered_bytes`, for this output.
    pub undelivered_bytes: u64,
    /// Of those, bytes dropped because this output fell behind.
    pub dropped_bytes: u64,
}

impl Summary {
    /// The output that holds least of what was captured: stdout's figures, or the
    /// --pcap file's.
    pub fn worst_output(&self) -> Delivered {
        let stdout = Delivered {
            events: self.events,
            captured_bytes: self.captured_bytes,
            undelivered_bytes: self.undelivered_bytes,
            dropped_bytes: self.dropped_bytes,
        };
        self.pcap_file
            .filter(|file| file.undelivered_bytes > stdout.undelivered_bytes)
            .unwrap_or(stdout)
    }
}

impl Delivered {
    fn same_as_stdout(&self, s: &Summary) -> bool {
        (self.events, self.captured_bytes, self.dropped_bytes)
            == (s.events, s.captured_bytes, s.dropped_bytes)
    }
}

/// A status line as programs read it back (the bench, the tests): the schema of
/// `--status json`, in one place. Kinds and fields a reader does not use are left out.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum StatusLine {
    Tracing {
        path: String,
        library: String,
        #[serde(default)]
        pid: Option<u32>,
        #[serde(default)]
        latency_us: Option<u64>,
        #[serde(default)]
        examined_us: Option<u64>,
        #[serde(default)]
        held: bool,
    },
    Ready,
    Warning {
        message: String,
        #[serde(default)]
        undelivered_bytes: Option<u64>,
    },
    Notice {
        message: String,
    },
    Error {
        message: String,
    },
    Summary(Summary),
    #[serde(other)]
    Other,
}

impl StatusLine {
    /// One line of stderr, or None when it is not a status line.
    pub fn parse(line: &str) -> Option<StatusLine> {
        serde_json::from_str(line).ok()
    }
}

pub fn summary(s: &Summary) {
    emit(
        "summary",
        || {
            let mut text = format!(
                "{} calls seen in the kernel, {} events printed, {} bytes captured, {} bytes truncated, {} bytes undelivered",
                s.calls, s.events, s.captured_bytes, s.truncated_bytes, s.undelivered_bytes
            );
            if s.unannounced_bytes > 0 {
                text.push_str(&format!(
                    " ({} of them in calls that never reached user space)",
                    s.unannounced_bytes
                ));
            }
            if s.dropped_bytes > 0 {
                text.push_str(&format!(
                    " ({} of them dropped because the output fell behind)",
                    s.dropped_bytes
                ));
            }
            if s.untracked_calls > 0 {
                text.push_str(&format!(
                    "; {} calls not traced (the per-thread call table was full)",
                    s.untracked_calls
                ));
            }
            if s.malformed_records > 0 {
                text.push_str(&format!(
                    "; {} malformed records dropped",
                    s.malformed_records
                ));
            }
            if let Some(file) = s.pcap_file.filter(|f| !f.same_as_stdout(s)) {
                text.push_str(&format!(
                    "; the --pcap file: {} events, {} bytes captured, {} bytes undelivered ({} of them dropped because it fell behind)",
                    file.events, file.captured_bytes, file.undelivered_bytes, file.dropped_bytes
                ));
            }
            text
        },
        serde_json::to_value(s).unwrap_or_default(),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_worst_output_is_the_one_that_lacks_most() {
        let mut s = Summary {
            events: 10,
            captured_bytes: 600,
            undelivered_bytes: 400,
            dropped_bytes: 400,
            ..Summary::default()
        };
        assert_eq!(s.worst_output().captured_bytes, 600, "stdout alone");
        let file = Delivered {
            events: 10,
            captured_bytes: 1000,
            undelivered_bytes: 0,
            dropped_bytes: 0,
        };
        s.pcap_file = Some(file);
        assert_eq!(s.worst_output().captured_bytes, 600, "stdout lacks more");
        let json = serde_json::to_string(&s).unwrap();
        assert!(
            json.contains(r#""pcap_file":{"events":10,"captured_bytes":1000"#),
            "{json}"
        );
        s.undelivered_bytes = 0;
        s.dropped_bytes = 0;
        s.pcap_file = Some(Delivered {
            captured_bytes: 200,
            undelivered_bytes: 800,
            dropped_bytes: 800,
            ..file
        });
        assert_eq!(s.worst_output().dropped_bytes, 800, "the file lacks more");
    }

    #[test]
    fn status_lines_read_back() {
        let s = StatusLine::parse(
            r#"{"calls":200,"events":199,"captured_bytes":20000,"truncated_bytes":0,"undelivered_bytes":100,"unannounced_bytes":0,"untracked_calls":0,"malformed_records":0,"type":"summary"}"#,
        );
        let Some(StatusLine::Summary(s)) = s else {
            panic!("{s:?}")
        };
        assert_eq!((s.calls, s.events, s.undelivered_bytes), (200, 199, 100));
        let tracing = StatusLine::parse(
            r#"{"type":"tracing","path":"/usr/lib/libssl.so.3","library":"openssl","functions":[]}"#,
        );
        assert!(matches!(
            tracing,
            Some(StatusLine::Tracing {
                latency_us: None,
                ..
            })
        ));
        assert_eq!(
            StatusLine::parse(r#"{"type":"ready"}"#),
            Some(StatusLine::Ready)
        );
        let warning =
            StatusLine::parse(r#"{"type":"warning","message":"x","undelivered_bytes":5}"#);
        assert!(matches!(
            warning,
            Some(StatusLine::Warning {
                undelivered_bytes: Some(5),
                ..
            })
        ));
        assert_eq!(
            StatusLine::parse(r#"{"type":"kernel","features":[]}"#),
            Some(StatusLine::Other)
        );
        assert_eq!(StatusLine::parse("sslsniff: ready"), None);
    }

    #[test]
    fn hostile_names_stay_on_one_safe_line() {
        assert_eq!(safe(b"a\x1b]0;pwn\x07\nZ"), "a\\x1b]0;pwn\\x07\\x0aZ");
        assert_eq!(safe("lib\u{202e}os.so".as_bytes()), "lib\\u{202e}os.so");
    }
}
