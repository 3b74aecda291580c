//! How TLS code without symbols is recognised, as data beside the support table: each
//! family is a C library inside a program (BoringSSL in Bun, aws-lc under rustls), known
//! by the source-file name its error calls pass (`__FILE__`) and by the set of reason
//! codes each of its functions raises. Those are the library's public error ABI: they
//! survive compilers, flags and new builds, where byte patterns and offsets do not.

use crate::libs::Kind;

#[derive(Debug)]
pub struct Family {
    /// For messages.
    pub name: &'static str,
    /// The support-table library whose functions the matches are.
    pub kind: Kind,
    /// How the `__FILE__` string of the error calls ends: it is the whole string or
    /// follows a '/'.
    pub file: &'static str,
    /// The `ERR_LIB_*` number passed with that file.
    pub err_lib: u32,
    /// Every one must match exactly one function, or none of the family is used: half
    /// of a connection's traffic would mislead more than none.
    pub signatures: &'static [Signature],
}

#[derive(Debug)]
pub struct Signature {
    /// The support table's name for the function.
    pub func: &'static str,
    /// The reason codes its error calls pass with the family's file and library, in
    /// ascending order: exactly these, no more and no fewer.
    pub reasons: &'static [u32],
    /// When not empty, the function also calls one whose reasons are exactly these.
    pub callee: &'static [u32],
}

pub static FAMILIES: &[Family] = &[
    // Bun links BoringSSL with LTO and keeps no symbol of it. 66 is
    // ERR_R_SHOULD_NOT_HAVE_BEEN_CALLED (a QUIC connection), 226 SSL_R_UNINITIALIZED;
    // SSL_write also raises 215 and 111 itself. SSL_read raises only 66 (SSL_peek is
    // inlined into it) and calls ssl_read_impl, which raises 215 and 226.
    Family {
        name: "BoringSSL",
        kind: Kind::OpenSsl,
        file: "ssl/ssl_lib.cc",
        err_lib: 16,
        signatures: &[
            Signature {
                func: "SSL_write",
                reasons: &[66, 111, 215, 226],
                callee: &[],
            },
            Signature {
                func: "SSL_read",
                reasons: &[66],
                callee: &[215, 226],
            },
        ],
    },
    // rustls over aws-lc (Deno, uv): the record layer seals and opens through
    // EVP_AEAD_CTX_*, library 30 (ERR_LIB_CIPHER). 101 CIPHER_R_BAD_DECRYPT, 103
    // _BUFFER_TOO_SMALL, 104 _CTRL_NOT_IMPLEMENTED, 112 _INVALID_OPERATION, 115
    // _OUTPUT_ALIASES_INPUT, 117 _TOO_LARGE.
    Family {
        name: "aws-lc",
        kind: Kind::Rustls,
        file: "crypto/fipsmodule/cipher/aead.c",
        err_lib: 30,
        signatures: &[
            Signature {
                func: "EVP_AEAD_CTX_seal",
                reasons: &[103, 115, 117],
                callee: &[],
            },
            Signature {
                func: "EVP_AEAD_CTX_seal_scatter",
                reasons: &[112, 115],
                callee: &[],
            },
            Signature {
                func: "EVP_AEAD_CTX_open",
                reasons: &[101, 103, 115],
                callee: &[],
            },
            Signature {
                func: "EVP_AEAD_CTX_open_gather",
                reasons: &[104, 115],
                callee: &[],
            },
        ],
    },
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::libs::LIBRARIES;

    #[test]
    fn every_signature_names_a_function_of_its_library() {
        for family in FAMILIES {
            let lib = LIBRARIES.iter().find(|l| l.kind == family.kind).unwrap();
            for sig in family.signatures {
                assert!(lib.funcs.iter().any(|f| f.name == sig.func), "{}", sig.func);
                assert!(sig.reasons.windows(2).all(|w| w[0] < w[1]), "{}", sig.func);
                assert!(sig.callee.windows(2).all(|w| w[0] < w[1]), "{}", sig.func);
            }
        }
    }
}
