//! What sslsniff supports, as data: TLS libraries, the functions probed in each, and how
//! each function's return value reads. Everything else walks this table.

use std::sync::LazyLock;

/// How a handshake function's return value reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HandshakeRet {
    /// The value that means the handshake completed.
    pub ok: i64,
    /// Values that mean "call me again" (non-blocking I/O), not failure.
    pub retry: Retry,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// These exact codes are retries; anything else that is not `ok` is a failure.
    Codes(&'static [i64]),
    /// Any negative value may be a retry or a failure (OpenSSL's -1 needs
    /// SSL_get_error to tell): decided by what the same connection does next.
    AnyNegative,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Done,
    Retry,
    Failed,
    /// A retry or a failure; only a later success on the same connection tells.
    Unsure,
}

impl HandshakeRet {
    pub fn outcome(&self, ret: i64) -> Outcome {
        if ret == self.ok {
            return Outcome::Done;
        }
        match self.retry {
            Retry::Codes(codes) if codes.contains(&ret) => Outcome::Retry,
            Retry::AnyNegative if ret < 0 => Outcome::Unsure,
            _ => Outcome::Failed,
        }
    }
}

/// Which way a call moves data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    Read,
    Write,
    Handshake,
}

impl Direction {
    /// The name used in structured output.
    pub fn name(self) -> &'static str {
        match self {
            Direction::Read => "read",
            Direction::Write => "write",
            Direction::Handshake => "handshake",
        }
    }
}

/// How a read or write function says how many bytes it moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Count {
    /// A return value above 0 is the byte count.
    Returned,
    /// A return value of 1 is success; the byte count is behind the fourth argument
    /// (OpenSSL's `_ex` functions).
    ThroughPointer,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Read(Count),
    Write(Count),
    Handshake(HandshakeRet),
}

impl Role {
    pub fn direction(&self) -> Direction {
        match self {
            Role::Read(_) => Direction::Read,
            Role::Write(_) => Direction::Write,
            Role::Handshake(_) => Direction::Handshake,
        }
    }
}

#[derive(Debug)]
pub struct Func {
    pub name: &'static str,
    pub role: Role,
    /// The C return type is `int` (else `ssize_t`): its sign is in bit 31, not 63.
    pub ret_int: bool,
    /// An aws-lc AEAD function: how its arguments are laid out.
    pub aead: Option<AeadArgs>,
}

/// The argument lists of aws-lc's `EVP_AEAD_CTX_*`, each read by its own program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AeadArgs {
    Seal,
    SealScatter,
    Open,
    OpenGather,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    OpenSsl,
    GnuTls,
    Nss,
    WolfSsl,
    MbedTls,
    Go,
    Rustls,
}

/// How a library's functions are called, and so how they are probed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Abi {
    /// The C calling convention: an entry uprobe and a uretprobe.
    C,
    /// Go's register ABI: uprobes on the entry and on every return instruction (a
    /// uretprobe crashes Go), calls tied to returns by goroutine.
    Go,
    /// aws-lc's `EVP_AEAD_CTX_*`: each function has its own programs, which read its
    /// arguments (some on the stack) and keep only TLS records' application data.
    Aead,
}

#[derive(Debug)]
pub struct Library {
    pub kind: Kind,
    /// The TYPE in `--extra-lib TYPE:PATH`.
    pub name: &'static str,
    /// File names that are this library: a name matches when it equals the prefix or
    /// continues it with a version (`libssl.so` matches `libssl.so.3`, not `libssl3.so`).
    pub sonames: &'static [&'static str],
    /// The first argument of every function is an NSPR file descriptor, which may carry
    /// no TLS at all (files, pipes): the BPF side skips those.
    pub nspr_fd: bool,
    pub abi: Abi,
    pub funcs: &'static [Func],
    /// Functions whose first argument is a connection object that stops being the
    /// connection it was: the first frees it, the others ready it for another
    /// connection or transport. Probed with connection tracking, they end the object's
    /// tie to its socket (src/bpf/conn.bpf.h); a file without the first learns no tie.
    /// Empty: the library's objects are never tied.
    pub untie: &'static [&'static str],
}

const fn func(name: &'static str, role: Role) -> Func {
    Func {
        name,
        role,
        ret_int: true,
        aead: None,
    }
}

const fn func_ssize_t(name: &'static str, role: Role) -> Func {
    Func {
        name,
        role,
        ret_int: false,
        aead: None,
    }
}

const fn aead(name: &'static str, role: Role, args: AeadArgs) -> Func {
    Func {
        name,
        role,
        ret_int: true,
        aead: Some(args),
    }
}

const COUNT: Count = Count::Returned;
const EX: Count = Count::ThroughPointer;

const OPENSSL_HANDSHAKE: HandshakeRet = HandshakeRet {
    ok: 1,
    retry: Retry::AnyNegative,
};
/// GNUTLS_E_WARNING_ALERT_RECEIVED, _AGAIN, _GOT_APPLICATION_DATA, _INTERRUPTED.
const GNUTLS_HANDSHAKE: HandshakeRet = HandshakeRet {
    ok: 0,
    retry: Retry::Codes(&[-16, -28, -38, -52]),
};
/// A Go handshake returns an error: nil (0 from the BPF side) or not (-1).
const GO_HANDSHAKE: HandshakeRet = HandshakeRet {
    ok: 0,
    retry: Retry::Codes(&[]),
};
/// MBEDTLS_ERR_SSL_WANT_READ, _WANT_WRITE, _ASYNC_IN_PROGRESS, _CRYPTO_IN_PROGRESS.
const MBEDTLS_HANDSHAKE: HandshakeRet = HandshakeRet {
    ok: 0,
    retry: Retry::Codes(&[-0x6900, -0x6880, -0x6500, -0x7000]),
};

pub static LIBRARIES: &[Library] = &[
    Library {
        kind: Kind::OpenSsl,
        name: "openssl",
        sonames: &["libssl.so"],
        nspr_fd: false,
        abi: Abi::C,
        funcs: &[
            func("SSL_read", Role::Read(COUNT)),
            func("SSL_write", Role::Write(COUNT)),
            func("SSL_read_ex", Role::Read(EX)),
            func("SSL_write_ex", Role::Write(EX)),
            func("SSL_do_handshake", Role::Handshake(OPENSSL_HANDSHAKE)),
        ],
        // SSL_set_fd may set the BIO without calling SSL_set_bio (the compiler may
        // inline it): each setter is probed.
        untie: &[
            "SSL_free",
            "SSL_clear",
            "SSL_set_bio",
            "SSL_set0_rbio",
            "SSL_set0_wbio",
            "SSL_set_fd",
        ],
    },
    Library {
        kind: Kind::GnuTls,
        name: "gnutls",
        sonames: &["libgnutls.so"],
        nspr_fd: false,
        abi: Abi::C,
        funcs: &[
            func_ssize_t("gnutls_record_recv", Role::Read(COUNT)),
            func_ssize_t("gnutls_record_send", Role::Write(COUNT)),
            func("gnutls_handshake", Role::Handshake(GNUTLS_HANDSHAKE)),
        ],
        untie: &[],
    },
    Library {
        kind: Kind::Nss,
        name: "nss",
        sonames: &["libnspr4.so"],
        nspr_fd: true,
        abi: Abi::C,
        funcs: &[
            func("PR_Read", Role::Read(COUNT)),
            func("PR_Recv", Role::Read(COUNT)),
            func("PR_Write", Role::Write(COUNT)),
            func("PR_Send", Role::Write(COUNT)),
        ],
        untie: &[],
    },
    Library {
        kind: Kind::WolfSsl,
        name: "wolfssl",
        sonames: &["libwolfssl.so"],
        nspr_fd: false,
        abi: Abi::C,
        funcs: &[
            func("wolfSSL_read", Role::Read(COUNT)),
            func("wolfSSL_write", Role::Write(COUNT)),
            func("wolfSSL_connect", Role::Handshake(OPENSSL_HANDSHAKE)),
            func("wolfSSL_accept", Role::Handshake(OPENSSL_HANDSHAKE)),
        ],
        untie: &[],
    },
    Library {
        kind: Kind::MbedTls,
        name: "mbedtls",
        sonames: &["libmbedtls.so"],
        nspr_fd: false,
        abi: Abi::C,
        funcs: &[
            func("mbedtls_ssl_read", Role::Read(COUNT)),
            func("mbedtls_ssl_write", Role::Write(COUNT)),
            func("mbedtls_ssl_handshake", Role::Handshake(MBEDTLS_HANDSHAKE)),
        ],
        untie: &[],
    },
    // rustls over aws-lc, inside stripped programs (Deno, uv): found by its code
    // (src/symbolless/), never by a file name. Records are sealed with their plaintext
    // as input and opened with it as output; the record header is the additional data.
    Library {
        kind: Kind::Rustls,
        name: "rustls",
        sonames: &[],
        nspr_fd: false,
        abi: Abi::Aead,
        funcs: &[
            aead("EVP_AEAD_CTX_seal", Role::Write(COUNT), AeadArgs::Seal),
            aead(
                "EVP_AEAD_CTX_seal_scatter",
                Role::Write(COUNT),
                AeadArgs::SealScatter,
            ),
            aead("EVP_AEAD_CTX_open", Role::Read(COUNT), AeadArgs::Open),
            aead(
                "EVP_AEAD_CTX_open_gather",
                Role::Read(COUNT),
                AeadArgs::OpenGather,
            ),
        ],
        untie: &[],
    },
    // Go's crypto/tls, linked into each Go program: found by what an executable is, not
    // by a file name. The names are those src/golang/ looks up (tested).
    Library {
        kind: Kind::Go,
        name: "go",
        sonames: &[],
        nspr_fd: false,
        abi: Abi::Go,
        funcs: &[
            func_ssize_t("crypto/tls.(*Conn).Write", Role::Write(COUNT)),
            func_ssize_t("crypto/tls.(*Conn).Read", Role::Read(COUNT)),
            func_ssize_t(
                "crypto/tls.(*Conn).clientHandshake",
                Role::Handshake(GO_HANDSHAKE),
            ),
            func_ssize_t(
                "crypto/tls.(*Conn).serverHandshake",
                Role::Handshake(GO_HANDSHAKE),
            ),
        ],
        untie: &[],
    },
];

/// A probed function's index in the flattened table: the probe cookie, and the `func`
/// field of every event.
pub type FuncId = u32;

/// Every function of every library with its id.
pub fn all_funcs() -> impl Iterator<Item = (FuncId, &'static Library, &'static Func)> {
    LIBRARIES
        .iter()
        .flat_map(|lib| lib.funcs.iter().map(move |f| (lib, f)))
        .enumerate()
        .map(|(id, (lib, f))| (id as FuncId, lib, f))
}

/// Looked up for every event, so indexed rather than searched.
pub fn by_id(id: FuncId) -> Option<(&'static Library, &'static Func)> {
    static BY_ID: LazyLock<Vec<(&'static Library, &'static Func)>> =
        LazyLock::new(|| all_funcs().map(|(_, lib, f)| (lib, f)).collect());
    BY_ID.get(id as usize).copied()
}

/// The libraries of these kinds.
pub fn of_kinds(kinds: &[Kind]) -> Vec<&'static Library> {
    LIBRARIES
        .iter()
        .filter(|l| kinds.contains(&l.kind))
        .collect()
}

pub fn by_name(name: &str) -> Option<&'static Library> {
    LIBRARIES.iter().find(|lib| lib.name == name)
}

impl Library {
    /// Every symbol looked up in a file of this library: its functions and its untie.
    pub fn symbol_names(&self) -> impl Iterator<Item = &'static str> {
        self.funcs
            .iter()
            .map(|f| f.name)
            .chain(self.untie.iter().copied())
    }

    pub fn matches_file_name(&self, file_name: &str) -> bool {
        self.sonames.iter().any(|soname| {
            file_name
                .strip_prefix(soname)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip() {
        for (id, lib, f) in all_funcs() {
            let (l2, f2) = by_id(id).unwrap();
            assert_eq!((lib.kind, f.name), (l2.kind, f2.name));
        }
        assert!(by_id(all_funcs().count() as FuncId).is_none());
    }

    #[test]
    fn soname_matching_respects_version_suffixes() {
        let openssl = by_name("openssl").unwrap();
        assert!(openssl.matches_file_name("libssl.so"));
        assert!(openssl.matches_file_name("libssl.so.3"));
        assert!(!openssl.matches_file_name("libssl3.so"));
        assert!(!openssl.matches_file_name("libssl.sox"));
    }

    #[test]
    fn the_go_table_names_what_the_go_analysis_finds() {
        let go = by_name("go").unwrap();
        let names: Vec<_> = go.funcs.iter().map(|f| f.name).collect();
        let found: Vec<_> = crate::golang::TARGETS.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, found);
    }

    #[test]
    fn handshake_outcomes() {
        assert_eq!(OPENSSL_HANDSHAKE.outcome(1), Outcome::Done);
        assert_eq!(OPENSSL_HANDSHAKE.outcome(-1), Outcome::Unsure);
        assert_eq!(OPENSSL_HANDSHAKE.outcome(0), Outcome::Failed);
        assert_eq!(GNUTLS_HANDSHAKE.outcome(0), Outcome::Done);
        assert_eq!(GNUTLS_HANDSHAKE.outcome(-28), Outcome::Retry);
        assert_eq!(GNUTLS_HANDSHAKE.outcome(-12), Outcome::Failed);
        assert_eq!(MBEDTLS_HANDSHAKE.outcome(-0x6900), Outcome::Retry);
    }
}
