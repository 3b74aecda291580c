//! The load generator (the child side): a TLS client and server in one process over
//! 127.0.0.1, the client writing N messages of S bytes and the server reading them.
//!
//! It speaks to the benchmark over its standard streams: `ready` once the handshake is
//! done, then it waits for one byte on stdin (the benchmark attaches its tracer in
//! between), runs the timed loop and prints `elapsed_ns=.. writes=.. reads=..`.

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use openssl::asn1::Asn1Time;
use openssl::bn::BigNum;
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::ssl::{Ssl, SslContext, SslMethod, SslStream, SslVerifyMode};
use openssl::x509::{X509Name, X509};

use crate::message::{Messages, MAX_CALLS};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Messages to send
    #[arg(long = "n", value_parser = clap::value_parser!(u64).range(1..MAX_CALLS))]
    pub n: u64,
    /// Bytes per message
    #[arg(long)]
    pub size: usize,
    /// Goes into every message, so that payloads from another run cannot pass
    #[arg(long)]
    pub run_id: u32,
    /// Payload bytes per second the writer keeps to at most; as fast as it can without
    #[arg(long)]
    pub rate: Option<u64>,
}

/// What one load run reports.
#[derive(Debug, Clone, Copy)]
pub struct Outcome {
    pub elapsed_s: f64,
    pub writes: u64,
    pub reads: u64,
}

impl Outcome {
    pub fn to_line(self) -> String {
        format!(
            "elapsed_ns={} writes={} reads={}",
            (self.elapsed_s * 1e9) as u64,
            self.writes,
            self.reads
        )
    }

    pub fn parse(line: &str) -> Option<Self> {
        let mut fields = line
            .split_whitespace()
            .map(|f| f.split_once('=').map(|(_, v)| v.parse::<u64>()));
        let mut next = || fields.next()??.ok();
        let elapsed_ns = next()?;
        Some(Outcome {
            elapsed_s: elapsed_ns as f64 / 1e9,
            writes: next()?,
            reads: next()?,
        })
    }
}

pub fn run(args: &Args) -> Result<()> {
    let messages = Messages::new(args.run_id, args.size);
    let (key, cert) = self_signed().context("cannot make a certificate")?;
    let listener = TcpListener::bind("127.0.0.1:0").context("cannot listen on 127.0.0.1")?;
    let addr = listener.local_addr()?;

    // The server must not enter SSL_read before the tracer is attached: a call entered
    // before its uprobe exists never reports its return, and its bytes would be missed.
    let (ready_tx, ready_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel();
    let (n, size) = (args.n, args.size);
    let server = thread::Builder::new().name("bench-server".into()).spawn(
        move || -> Result<(u64, Instant)> {
            pin_to_cpu(1);
            let (tcp, _) = listener.accept()?;
            let mut tls = server_session(&key, &cert, tcp)?;
            ready_tx.send(())?;
            go_rx.recv()?;
            let reads = read_all(&mut tls, n, size)?;
            Ok((reads, Instant::now()))
        },
    )?;

    pin_to_cpu(0);
    let mut client = client_session(TcpStream::connect(addr)?)?;
    if ready_rx.recv().is_err() {
        // The server thread has ended: its error says why.
        let error = join(server).err();
        return Err(
            error.unwrap_or_else(|| anyhow!("the server thread ended before its handshake"))
        );
    }
    announce_ready_and_wait()?;

    let start = Instant::now();
    go_tx.send(())?;
    let mut buf = messages.buffer();
    for i in 0..args.n {
        if let Some(rate) = args.rate {
            pace(start, i * size as u64, rate);
        }
        messages.set_index(&mut buf, i);
        // Partial writes are off: one SSL_write_ex moves the whole message or fails.
        let written = client.ssl_write(&buf).context("SSL_write_ex failed")?;
        ensure!(
            written == buf.len(),
            "SSL_write_ex wrote {written} of {} bytes",
            buf.len()
        );
    }
    let (reads, end) = join(server)?;
    let outcome = Outcome {
        elapsed_s: (end - start).as_secs_f64(),
        writes: args.n,
        reads,
    };
    println!("{}", outcome.to_line());
    Ok(())
}

/// Waits until `sent` bytes are due at `rate` bytes a second from `start`. Sleeps only
/// when a millisecond or more ahead: small messages come thousands to the millisecond,
/// and a sleep per call would set their pace rather than the rate.
fn pace(start: Instant, sent: u64, rate: u64) {
    let due = Duration::from_secs_f64(sent as f64 / rate as f64);
    let ahead = due.saturating_sub(start.elapsed());
    if ahead >= Duration::from_millis(1) {
        thread::sleep(ahead);
    }
}

/// Keeps the writer and the reader each on a CPU of its own. Left to the scheduler,
/// they sometimes share one and sometimes not, and the untraced time of the same load
/// moved between 0.22 s and 0.6 s from run to run, which made the overhead ratios noise.
/// On a single-CPU machine the call fails and changes nothing.
fn pin_to_cpu(cpu: usize) {
    // SAFETY: cpu_set_t is plain data, zeroed is its empty set; CPU_SET writes inside it,
    // and sched_setaffinity reads it for the calling thread only.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

fn join<T>(thread: thread::JoinHandle<Result<T>>) -> Result<T> {
    thread
        .join()
        .map_err(|_| anyhow!("the server thread panicked"))?
}

/// Reads n messages of size bytes, each as a loop of SSL_read_ex until it is whole.
fn read_all(tls: &mut SslStream<TcpStream>, n: u64, size: usize) -> Result<u64> {
    let mut buf = vec![0; size];
    let mut reads = 0;
    for _ in 0..n {
        let mut got = 0;
        while got < size {
            got += tls
                .ssl_read(&mut buf[got..])
                .context("SSL_read_ex failed")?;
            reads += 1;
        }
    }
    Ok(reads)
}

fn announce_ready_and_wait() -> Result<()> {
    let mut out = io::stdout().lock();
    writeln!(out, "ready")?;
    out.flush()?;
    let mut byte = [0];
    if io::stdin().read(&mut byte)? == 0 {
        bail!("the benchmark went away before starting the load");
    }
    Ok(())
}

/// OpenSSL's own defaults, not the `openssl` crate's connector and acceptor: those turn
/// on partial writes and buffer releasing, which would change what is measured.
fn server_session(
    key: &PKey<Private>,
    cert: &X509,
    tcp: TcpStream,
) -> Result<SslStream<TcpStream>> {
    let mut ctx = SslContext::builder(SslMethod::tls_server())?;
    ctx.set_private_key(key)?;
    ctx.set_certificate(cert)?;
    let mut tls = SslStream::new(Ssl::new(&ctx.build())?, tcp)?;
    tls.accept().context("TLS accept failed")?;
    Ok(tls)
}

fn client_session(tcp: TcpStream) -> Result<SslStream<TcpStream>> {
    // One segment per write, as a request-response program would send: Nagle's algorithm
    // would batch small messages and measure something else.
    tcp.set_nodelay(true)?;
    let mut ctx = SslContext::builder(SslMethod::tls_client())?;
    // The peer is our own thread with a throwaway certificate: there is nothing to verify.
    ctx.set_verify(SslVerifyMode::NONE);
    let mut tls = SslStream::new(Ssl::new(&ctx.build())?, tcp)?;
    tls.connect().context("TLS connect failed")?;
    Ok(tls)
}

fn self_signed() -> Result<(PKey<Private>, X509)> {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)?;
    let key = PKey::from_ec_key(EcKey::generate(&group)?)?;
    let mut name = X509Name::builder()?;
    name.append_entry_by_nid(Nid::COMMONNAME, "sslsniff-bench")?;
    let name = name.build();
    let serial = BigNum::from_u32(1)?.to_asn1_integer()?;
    let (not_before, not_after) = (Asn1Time::days_from_now(0)?, Asn1Time::days_from_now(1)?);
    let mut cert = X509::builder()?;
    cert.set_version(2)?;
    cert.set_serial_number(&serial)?;
    cert.set_subject_name(&name)?;
    cert.set_issuer_name(&name)?;
    cert.set_pubkey(&key)?;
    cert.set_not_before(&not_before)?;
    cert.set_not_after(&not_after)?;
    cert.sign(&key, MessageDigest::sha256())?;
    Ok((key, cert.build()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcome_survives_its_line() {
        let o = Outcome {
            elapsed_s: 1.5,
            writes: 10,
            reads: 40,
        };
        let back = Outcome::parse(&o.to_line()).unwrap();
        assert_eq!((back.elapsed_s, back.writes, back.reads), (1.5, 10, 40));
        assert!(Outcome::parse("ready").is_none());
    }
}
