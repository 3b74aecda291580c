//! The TLS peers that the end-to-end tests and the bench both start: a certificate
//! for localhost and a python3 server that reads every connection to its end.
//!
//! Standard library only: the tests and the bench (through `#[path]`) build this file.
#![allow(dead_code)]

use std::io;
use std::path::Path;
use std::process::{Command, Stdio};

/// Makes a fresh self-signed certificate for localhost in `dir`: cert.pem and key.pem.
pub fn make_certificate(dir: &Path) -> io::Result<()> {
    let status = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes"])
        .args(["-days", "2", "-subj", "/CN=localhost"])
        .args(["-keyout", "key.pem", "-out", "cert.pem"])
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?;
    if !status.success() {
        return Err(io::Error::other(format!("openssl req failed: {status}")));
    }
    Ok(())
}

/// A python3 TLS server on 127.0.0.1:`port`, run where the certificate is, that reads
/// each connection to its end, one thread each.
pub fn sink_server_script(port: u16) -> String {
    format!(
        "import socket, ssl, threading\n\
         ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)\n\
         ctx.load_cert_chain('cert.pem', 'key.pem')\n\
         srv = socket.create_server(('127.0.0.1', {port}), backlog=128)\n\
         def serve(conn):\n\
         \x20   with ctx.wrap_socket(conn, server_side=True) as s:\n\
         \x20       while s.recv(1 << 20): pass\n\
         while True:\n\
         \x20   conn, _ = srv.accept()\n\
         \x20   threading.Thread(target=serve, args=(conn,), daemon=True).start()\n"
    )
}
