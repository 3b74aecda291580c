//! HPACK (RFC 7541) decoding that keeps going when sslsniff attached mid-connection.
//!
//! Why a dynamic-table reference can still be trusted after a late attach: an index
//! counts entries from the newest (62 is the last one inserted), and every entry
//! inserted since the attach was seen, so the `n` entries known are exactly the peer's
//! `n` newest. An index within them is right whatever the older, unseen entries were;
//! an index beyond them names an entry never seen and is reported unknown, never guessed.
//! Once the entries seen fill the table (less than one entry's overhead left under the
//! maximum size), every older entry has been evicted by the peer too: the whole table
//! is known again (`complete`). Literals and the static table need no history at all.
//!
//! A literal whose name is an unknown entry still inserts an entry, of unknown size: it
//! is counted at its smallest possible size, so our evictions can only lag the peer's.
//! Keeping an entry the peer evicted is harmless (a valid peer never refers to it);
//! evicting one the peer keeps only makes a later reference unknown. Either way no
//! field is ever given a wrong name or value.
//!
//! The work is linear in the block: entries share their bytes (`Arc`), so a reference to
//! an entry, or a literal that takes an entry's name, copies nothing; a field is copied
//! out only once it is known to fit the block's limits (`MAX_FIELDS`, `MAX_LIST_BYTES`),
//! so a block copies at most `MAX_LIST_BYTES` out of the table, whatever it refers to.

use std::collections::VecDeque;
use std::sync::{Arc, OnceLock};

use super::huffman;

/// Bytes counted per entry beyond its name and value (§4.1).
const ENTRY_OVERHEAD: usize = 32;
/// The table size a connection starts with (SETTINGS_HEADER_TABLE_SIZE's initial value),
/// and what a decoder attached mid-connection assumes until a size update says otherwise.
const INITIAL_MAX: usize = 4096;
/// Table bytes kept at most. A larger size update is honoured by evicting earlier than
/// the peer, which can only turn later references into unknown ones.
pub const TABLE_CAP: usize = 64 * 1024;
/// Fields kept per header block, and their name and value bytes: past these a block is
/// still decoded, to keep the table right, but its further fields are dropped.
pub const MAX_FIELDS: usize = 256;
pub const MAX_LIST_BYTES: usize = 64 * 1024;

/// RFC 7541 Appendix A: the static table, index 1 first.
const STATIC: [(&str, &str); 61] = [
    (":authority", ""),
    (":method", "GET"),
    (":method", "POST"),
    (":path", "/"),
    (":path", "/index.html"),
    (":scheme", "http"),
    (":scheme", "https"),
    (":status", "200"),
    (":status", "204"),
    (":status", "206"),
    (":status", "304"),
    (":status", "400"),
    (":status", "404"),
    (":status", "500"),
    ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"),
    ("accept-language", ""),
    ("accept-ranges", ""),
    ("accept", ""),
    ("access-control-allow-origin", ""),
    ("age", ""),
    ("allow", ""),
    ("authorization", ""),
    ("cache-control", ""),
    ("content-disposition", ""),
    ("content-encoding", ""),
    ("content-language", ""),
    ("content-length", ""),
    ("content-location", ""),
    ("content-range", ""),
    ("content-type", ""),
    ("cookie", ""),
    ("date", ""),
    ("etag", ""),
    ("expect", ""),
    ("expires", ""),
    ("from", ""),
    ("host", ""),
    ("if-match", ""),
    ("if-modified-since", ""),
    ("if-none-match", ""),
    ("if-range", ""),
    ("if-unmodified-since", ""),
    ("last-modified", ""),
    ("link", ""),
    ("location", ""),
    ("max-forwards", ""),
    ("proxy-authenticate", ""),
    ("proxy-authorization", ""),
    ("range", ""),
    ("referer", ""),
    ("refresh", ""),
    ("retry-after", ""),
    ("server", ""),
    ("set-cookie", ""),
    ("strict-transport-security", ""),
    ("transfer-encoding", ""),
    ("user-agent", ""),
    ("vary", ""),
    ("via", ""),
    ("www-authenticate", ""),
];

/// The static table's names, made once: an entry that takes one shares it.
fn static_names() -> &'static [Shared] {
    static NAMES: OnceLock<Vec<Shared>> = OnceLock::new();
    NAMES.get_or_init(|| {
        STATIC
            .iter()
            .map(|(name, _)| name.as_bytes().into())
            .collect()
    })
}

/// A field's name: known, or the index of a dynamic-table entry never seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Name {
    Known(Vec<u8>),
    Unknown(usize),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub name: Name,
    /// `None` when the whole field is a dynamic-table entry never seen.
    pub value: Option<Vec<u8>>,
    /// Sent as "never indexed" (§6.2.3): the sender marked it sensitive.
    pub sensitive: bool,
}

/// A decoded header block.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Block {
    pub fields: Vec<Field>,
    /// Fields dropped past `MAX_FIELDS` or `MAX_LIST_BYTES`.
    pub truncated: bool,
    /// The block was malformed; fields after the fault are missing and the table is no
    /// longer trusted (the decoder starts over as if attached now).
    pub malformed: bool,
    /// The whole dynamic table was known when the block was decoded.
    pub table_complete: bool,
    bytes: usize,
}

impl Block {
    /// Whether a field of `size` name and value bytes is kept: checked before the field
    /// is copied out, which a field past the limits never is.
    fn keeps(&mut self, size: usize) -> bool {
        if self.fields.len() >= MAX_FIELDS || self.bytes + size > MAX_LIST_BYTES {
            self.truncated = true;
            return false;
        }
        self.bytes += size;
        true
    }

    /// Adds a field named `name` (`None`: the dynamic entry `index`, never seen), if
    /// the block keeps it.
    fn field(&mut self, index: usize, name: Option<&[u8]>, value: Option<&[u8]>, sensitive: bool) {
        let size = name.map_or(0, <[u8]>::len) + value.map_or(0, <[u8]>::len);
        if self.keeps(size) {
            self.fields.push(Field {
                name: name.map_or(Name::Unknown(index), |n| Name::Known(n.to_vec())),
                value: value.map(<[u8]>::to_vec),
                sensitive,
            });
        }
    }
}

/// Bytes of a dynamic-table entry, shared by every entry and field that takes them.
type Shared = Arc<[u8]>;

/// An entry's name and value: `None` for a dynamic entry never seen; its name `None`
/// when that name came from one.
type Looked<'a> = Option<(Option<&'a [u8]>, &'a [u8])>;

struct Entry {
    /// `None`: the name came from an entry never seen.
    name: Option<Shared>,
    value: Shared,
    /// §4.1's size; for an unknown name, the smallest it can be.
    size: usize,
}

/// One direction's decoder (each direction of a connection has its own table).
pub struct Decoder {
    /// Newest first: `table[0]` is index 62.
    table: VecDeque<Entry>,
    size: usize,
    /// The maximum size as last signalled (or assumed); eviction uses it capped at
    /// `TABLE_CAP`.
    max: usize,
    complete: bool,
}

/// A malformed representation.
struct Malformed;

/// How a literal affects the table (§6.2).
#[derive(PartialEq)]
enum Indexing {
    Incremental,
    Without,
    Never,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder::new()
    }
}

impl Decoder {
    /// A decoder that has seen the connection from its start.
    pub fn new() -> Self {
        Decoder {
            table: VecDeque::new(),
            size: 0,
            max: INITIAL_MAX,
            complete: true,
        }
    }

    /// A decoder for a connection whose earlier header blocks were not seen (a late
    /// attach, or bytes lost): older entries may exist and are unknown.
    pub fn mid_connection() -> Self {
        Decoder {
            complete: false,
            ..Decoder::new()
        }
    }

    /// The heap this decoder holds: its entries' bytes, and the table's slots. At most
    /// `TABLE_CAP` plus 40 bytes per slot (2,048 entries fill it: about 144 KiB).
    pub fn held(&self) -> usize {
        self.size + self.table.capacity() * std::mem::size_of::<Entry>()
    }

    /// Header block bytes went by undecoded (lost, cut, or begun before the attach):
    /// they may have inserted entries, so no entry is known any more.
    pub fn lost(&mut self) {
        *self = Decoder {
            max: self.max,
            ..Decoder::mid_connection()
        };
    }

    /// Decodes one whole header block (HEADERS or PUSH_PROMISE plus its CONTINUATIONs).
    pub fn decode(&mut self, block: &[u8]) -> Block {
        let mut out = Block {
            table_complete: self.complete,
            ..Block::default()
        };
        let mut r = Reader { buf: block, pos: 0 };
        while r.pos < block.len() {
            if self.representation(&mut r, &mut out).is_err() {
                // What the rest of the block did to the table is unknown.
                out.malformed = true;
                self.lost();
                break;
            }
        }
        out
    }

    fn representation(&mut self, r: &mut Reader, out: &mut Block) -> Result<(), Malformed> {
        let first = r.peek()?;
        if first & 0x80 != 0 {
            let index = r.int(7)?;
            let (name, value) = match self.entry(index)? {
                Some((name, value)) => (name, Some(value)),
                None => (None, None),
            };
            out.field(index, name, value, false);
            return Ok(());
        }
        if first & 0xc0 == 0x40 {
            return self.literal(r, 6, Indexing::Incremental, out);
        }
        if first & 0xe0 == 0x20 {
            let size = r.int(5)?;
            self.resize(size);
            return Ok(());
        }
        let indexing = if first & 0x10 != 0 {
            Indexing::Never
        } else {
            Indexing::Without
        };
        self.literal(r, 4, indexing, out)
    }

    fn literal(
        &mut self,
        r: &mut Reader,
        prefix: u8,
        indexing: Indexing,
        out: &mut Block,
    ) -> Result<(), Malformed> {
        let index = r.int(prefix)?;
        let name = if index == 0 {
            Some(Shared::from(r.string()?))
        } else {
            self.name(index)?
        };
        let value = Shared::from(r.string()?);
        out.field(
            index,
            name.as_deref(),
            Some(&value),
            indexing == Indexing::Never,
        );
        if indexing == Indexing::Incremental {
            self.insert(name, value);
        }
        Ok(())
    }

    /// The name and value of the entry at `index`. Index 0 is malformed (§6.1).
    fn entry(&mut self, index: usize) -> Result<Looked<'_>, Malformed> {
        if index == 0 {
            return Err(Malformed);
        }
        if let Some((name, value)) = STATIC.get(index - 1) {
            return Ok(Some((Some(name.as_bytes()), value.as_bytes())));
        }
        let dynamic = index - STATIC.len() - 1;
        if dynamic >= self.table.len() {
            // A peer referring past a table we believed whole shows that older entries
            // exist after all (the assumed maximum size was wrong): stop claiming it.
            self.complete = false;
            return Ok(None);
        }
        let entry = &self.table[dynamic];
        Ok(Some((entry.name.as_deref(), &entry.value)))
    }

    /// The name of the entry at `index`, shared with the entry: `None` when unknown.
    fn name(&mut self, index: usize) -> Result<Option<Shared>, Malformed> {
        if let Some(name) = index.checked_sub(1).and_then(|i| static_names().get(i)) {
            return Ok(Some(name.clone()));
        }
        let dynamic = index.checked_sub(STATIC.len() + 1).ok_or(Malformed)?;
        match self.table.get(dynamic) {
            Some(entry) => Ok(entry.name.clone()),
            None => self.entry(index).map(|_| None),
        }
    }

    /// Adds an entry, evicting the oldest until it fits (§4.4).
    fn insert(&mut self, name: Option<Shared>, value: Shared) {
        let size = name.as_ref().map_or(0, |n| n.len()) + value.len() + ENTRY_OVERHEAD;
        let max = self.max.min(TABLE_CAP);
        while self.size + size > max {
            let Some(old) = self.table.pop_back() else {
                break;
            };
            self.size -= old.size;
        }
        // An entry larger than the table empties it and is not added (§4.4).
        if size <= max {
            self.table.push_front(Entry { name, value, size });
            self.size += size;
        }
        self.check_full();
    }

    /// A dynamic table size update (§6.3).
    fn resize(&mut self, max: usize) {
        self.max = max;
        while self.size > max.min(TABLE_CAP) {
            let Some(old) = self.table.pop_back() else {
                break;
            };
            self.size -= old.size;
        }
        self.check_full();
    }

    /// Recovery: when the entries seen leave no room for even an empty entry under the
    /// maximum size, no older entry can still be in the peer's table. Not above
    /// `TABLE_CAP`, where we evict entries the peer may still hold.
    fn check_full(&mut self) {
        if self.max <= TABLE_CAP && self.max - self.size.min(self.max) < ENTRY_OVERHEAD {
            self.complete = true;
        }
    }
}

/// A cursor over a header block.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn peek(&self) -> Result<u8, Malformed> {
        self.buf.get(self.pos).copied().ok_or(Malformed)
    }

    fn byte(&mut self) -> Result<u8, Malformed> {
        let b = self.peek()?;
        self.pos += 1;
        Ok(b)
    }

    /// An integer with an N-bit prefix (§5.1). Values past 2^28 are refused: no index,
    /// length or table size a peer can mean is that large.
    fn int(&mut self, prefix: u8) -> Result<usize, Malformed> {
        let mask = (1u16 << prefix) as u8 - 1;
        let mut value = (self.byte()? & mask) as u64;
        if value < mask as u64 {
            return Ok(value as usize);
        }
        let mut shift = 0;
        loop {
            let b = self.byte()?;
            value += ((b & 0x7f) as u64) << shift;
            if b & 0x80 == 0 {
                break;
            }
            shift += 7;
            if shift > 21 {
                return Err(Malformed);
            }
        }
        usize::try_from(value).map_err(|_| Malformed)
    }

    /// A string literal (§5.2); its length is bounded by the block itself.
    fn string(&mut self) -> Result<Vec<u8>, Malformed> {
        let huffman = self.peek()? & 0x80 != 0;
        let len = self.int(7)?;
        let end = self
            .pos
            .checked_add(len)
            .filter(|&e| e <= self.buf.len())
            .ok_or(Malformed)?;
        let raw = &self.buf[self.pos..end];
        self.pos = end;
        if huffman {
            huffman::decode(raw).ok_or(Malformed)
        } else {
            Ok(raw.to_vec())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn known(name: &str, value: &str) -> Field {
        Field {
            name: Name::Known(name.into()),
            value: Some(value.into()),
            sensitive: false,
        }
    }

    fn fields(pairs: &[(&str, &str)]) -> Vec<Field> {
        pairs.iter().map(|(n, v)| known(n, v)).collect()
    }

    /// The dynamic table, newest first, and its size.
    fn table(d: &Decoder) -> (Vec<(String, String)>, usize) {
        let entries = d
            .table
            .iter()
            .map(|e| {
                let name = String::from_utf8(e.name.as_deref().unwrap().to_vec()).unwrap();
                (name, String::from_utf8(e.value.to_vec()).unwrap())
            })
            .collect();
        (entries, d.size)
    }

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    // A test-only encoder for the representations (plain strings, no Huffman).
    fn int(out: &mut Vec<u8>, flags: u8, prefix: u8, mut v: usize) {
        let mask = (1usize << prefix) - 1;
        if v < mask {
            out.push(flags | v as u8);
            return;
        }
        out.push(flags | mask as u8);
        v -= mask;
        while v >= 128 {
            out.push((v % 128) as u8 | 0x80);
            v /= 128;
        }
        out.push(v as u8);
    }

    fn string(out: &mut Vec<u8>, s: &[u8]) {
        int(out, 0, 7, s.len());
        out.extend_from_slice(s);
    }

    fn indexed(out: &mut Vec<u8>, index: usize) {
        int(out, 0x80, 7, index);
    }

    /// Literal with incremental indexing; `index` 0 sends the name as a literal.
    fn insert(out: &mut Vec<u8>, index: usize, name: &[u8], value: &[u8]) {
        int(out, 0x40, 6, index);
        if index == 0 {
            string(out, name);
        }
        string(out, value);
    }

    #[test]
    fn rfc_7541_c2_literals_and_indexed() {
        let mut d = Decoder::new();
        let b = d.decode(&hex(
            "400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572",
        ));
        assert_eq!(b.fields, fields(&[("custom-key", "custom-header")]));
        assert_eq!(table(&d), (pairs(&[("custom-key", "custom-header")]), 55));

        let mut d = Decoder::new();
        let b = d.decode(&hex("040c 2f73 616d 706c 652f 7061 7468"));
        assert_eq!(b.fields, fields(&[(":path", "/sample/path")]));
        assert_eq!(table(&d), (vec![], 0));

        let mut d = Decoder::new();
        let b = d.decode(&hex("1008 7061 7373 776f 7264 0673 6563 7265 74"));
        let mut secret = known("password", "secret");
        secret.sensitive = true;
        assert_eq!(b.fields, vec![secret]);
        assert_eq!(table(&d), (vec![], 0));

        let mut d = Decoder::new();
        assert_eq!(d.decode(&hex("82")).fields, fields(&[(":method", "GET")]));
        assert_eq!(table(&d), (vec![], 0));
    }

    type Pairs = &'static [(&'static str, &'static str)];

    /// Blocks decoded in turn, each checked with the table after it: (block, fields,
    /// table after, table size after).
    fn series(mut d: Decoder, steps: &[(&str, Pairs, Pairs, usize)]) {
        for (i, (block, want, want_table, want_size)) in steps.iter().enumerate() {
            let b = d.decode(&hex(block));
            assert!(!b.malformed && !b.truncated, "step {i}");
            assert_eq!(b.fields, fields(want), "step {i}");
            assert_eq!(table(&d), (pairs(want_table), *want_size), "step {i}");
        }
    }

    const REQ1: &[(&str, &str)] = &[
        (":method", "GET"),
        (":scheme", "http"),
        (":path", "/"),
        (":authority", "www.example.com"),
    ];
    const REQ2: &[(&str, &str)] = &[
        (":method", "GET"),
        (":scheme", "http"),
        (":path", "/"),
        (":authority", "www.example.com"),
        ("cache-control", "no-cache"),
    ];
    const REQ3: &[(&str, &str)] = &[
        (":method", "GET"),
        (":scheme", "https"),
        (":path", "/index.html"),
        (":authority", "www.example.com"),
        ("custom-key", "custom-value"),
    ];
    const REQ_T1: &[(&str, &str)] = &[(":authority", "www.example.com")];
    const REQ_T2: &[(&str, &str)] = &[
        ("cache-control", "no-cache"),
        (":authority", "www.example.com"),
    ];
    const REQ_T3: &[(&str, &str)] = &[
        ("custom-key", "custom-value"),
        ("cache-control", "no-cache"),
        (":authority", "www.example.com"),
    ];

    #[test]
    fn rfc_7541_c3_requests_without_huffman() {
        series(
            Decoder::new(),
            &[
                (
                    "8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
                    REQ1,
                    REQ_T1,
                    57,
                ),
                ("8286 84be 5808 6e6f 2d63 6163 6865", REQ2, REQ_T2, 110),
                (
                    "8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65",
                    REQ3,
                    REQ_T3,
                    164,
                ),
            ],
        );
    }

    #[test]
    fn rfc_7541_c4_requests_with_huffman() {
        series(
            Decoder::new(),
            &[
                (
                    "8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff",
                    REQ1,
                    REQ_T1,
                    57,
                ),
                ("8286 84be 5886 a8eb 1064 9cbf", REQ2, REQ_T2, 110),
                (
                    "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf",
                    REQ3,
                    REQ_T3,
                    164,
                ),
            ],
        );
    }

    const DATE1: &str = "Mon, 21 Oct 2013 20:13:21 GMT";
    const DATE2: &str = "Mon, 21 Oct 2013 20:13:22 GMT";
    const LOC: &str = "https://www.example.com";
    const COOKIE: &str = "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1";
    const RESP1: &[(&str, &str)] = &[
        (":status", "302"),
        ("cache-control", "private"),
        ("date", DATE1),
        ("location", LOC),
    ];
    const RESP_T1: &[(&str, &str)] = &[
        ("location", LOC),
        ("date", DATE1),
        ("cache-control", "private"),
        (":status", "302"),
    ];
    const RESP2: &[(&str, &str)] = &[
        (":status", "307"),
        ("cache-control", "private"),
        ("date", DATE1),
        ("location", LOC),
    ];
    const RESP_T2: &[(&str, &str)] = &[
        (":status", "307"),
        ("location", LOC),
        ("date", DATE1),
        ("cache-control", "private"),
    ];
    const RESP3: &[(&str, &str)] = &[
        (":status", "200"),
        ("cache-control", "private"),
        ("date", DATE2),
        ("location", LOC),
        ("content-encoding", "gzip"),
        ("set-cookie", COOKIE),
    ];
    const RESP_T3: &[(&str, &str)] = &[
        ("set-cookie", COOKIE),
        ("content-encoding", "gzip"),
        ("date", DATE2),
    ];

    /// C.5 and C.6 run with SETTINGS_HEADER_TABLE_SIZE 256, so evictions happen.
    fn small_table() -> Decoder {
        Decoder {
            max: 256,
            ..Decoder::new()
        }
    }

    #[test]
    fn rfc_7541_c5_responses_without_huffman() {
        series(
            small_table(),
            &[
                (
                    "4803 3330 3258 0770 7269 7661 7465 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133
                     2032 303a 3133 3a32 3120 474d 546e 1768 7474 7073 3a2f 2f77 7777 2e65 7861 6d70
                     6c65 2e63 6f6d",
                    RESP1,
                    RESP_T1,
                    222,
                ),
                ("4803 3330 37c1 c0bf", RESP2, RESP_T2, 222),
                (
                    "88c1 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 3220 474d
                     54c0 5a04 677a 6970 7738 666f 6f3d 4153 444a 4b48 514b 425a 584f 5157 454f 5049
                     5541 5851 5745 4f49 553b 206d 6178 2d61 6765 3d33 3630 303b 2076 6572 7369 6f6e
                     3d31",
                    RESP3,
                    RESP_T3,
                    215,
                ),
            ],
        );
    }

    #[test]
    fn rfc_7541_c6_responses_with_huffman() {
        series(
            small_table(),
            &[
                (
                    "4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6
                     2d1b ff6e 919d 29ad 1718 63c7 8f0b 97c8 e9ae 82ae 43d3",
                    RESP1,
                    RESP_T1,
                    222,
                ),
                ("4883 640e ffc1 c0bf", RESP2, RESP_T2, 222),
                (
                    "88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a 839b d9ab
                     77ad 94e7 821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f
                     9587 3160 65c0 03ed 4ee5 b106 3d50 07",
                    RESP3,
                    RESP_T3,
                    215,
                ),
            ],
        );
    }

    #[test]
    fn unseen_entries_are_unknown_and_literals_still_decode() {
        let mut d = Decoder::mid_connection();
        let mut b = Vec::new();
        indexed(&mut b, 2); // static
        indexed(&mut b, 70); // dynamic, never seen
        int(&mut b, 0x00, 4, 65); // literal without indexing, name never seen
        string(&mut b, b"kept");
        insert(&mut b, 0, b"x-new", b"1");
        let block = d.decode(&b);
        assert!(!block.malformed && !block.table_complete);
        let unknown = |index, value: Option<&str>| Field {
            name: Name::Unknown(index),
            value: value.map(Into::into),
            sensitive: false,
        };
        assert_eq!(
            block.fields,
            vec![
                known(":method", "GET"),
                unknown(70, None),
                unknown(65, Some("kept")),
                known("x-new", "1"),
            ]
        );
        // The entry seen is index 62; 63 is older than the attach.
        let mut b = Vec::new();
        indexed(&mut b, 62);
        indexed(&mut b, 63);
        assert_eq!(
            d.decode(&b).fields,
            vec![known("x-new", "1"), unknown(63, None)]
        );
    }

    #[test]
    fn an_inserted_entry_with_an_unseen_name_keeps_its_value() {
        let mut d = Decoder::mid_connection();
        let mut b = Vec::new();
        insert(&mut b, 80, b"", b"v1");
        indexed(&mut b, 62);
        let block = d.decode(&b);
        let want = Field {
            name: Name::Unknown(80),
            value: Some(b"v1".to_vec()),
            sensitive: false,
        };
        assert_eq!(block.fields[0], want);
        assert_eq!(block.fields[1].name, Name::Unknown(62));
        assert_eq!(block.fields[1].value.as_deref(), Some(&b"v1"[..]));
        // Counted at its smallest size: value and overhead.
        assert_eq!(d.size, 2 + ENTRY_OVERHEAD);
    }

    #[test]
    fn recovers_once_the_entries_seen_fill_the_table() {
        let mut d = Decoder::mid_connection();
        // 40 entries of 32 + 2 + 66 = 100 bytes fill 4000 of 4096: 96 left, room for
        // older entries.
        let value = [b'v'; 66];
        let mut b = Vec::new();
        for i in 0..40u8 {
            insert(
                &mut b,
                0,
                &[b'k', b'0' + i / 10, b'0' + i % 10][1..],
                &value,
            );
        }
        let block = d.decode(&b);
        assert_eq!(block.fields.len(), 40);
        assert!(!d.complete && d.size == 4000);
        // 65 more bytes (32 + 1 + 32) leave 31: no entry can be older than those seen.
        let mut b = Vec::new();
        insert(&mut b, 0, b"z", &[b'z'; 32]);
        d.decode(&b);
        assert!(d.complete && d.size == 4065);
        // From here every index is known; the next block reports it.
        let mut b = Vec::new();
        indexed(&mut b, 62 + 40);
        let block = d.decode(&b);
        assert!(block.table_complete);
        assert_eq!(
            block.fields,
            vec![known("00", std::str::from_utf8(&value).unwrap())]
        );
        // Inserting evicts exactly the oldest 100-byte entry.
        let mut b = Vec::new();
        insert(&mut b, 0, b"y", &[b'y'; 32]);
        d.decode(&b);
        assert_eq!((d.table.len(), d.size), (41, 4030));
        assert_eq!(d.table.back().unwrap().name.as_deref(), Some(&b"01"[..]));
    }

    #[test]
    fn a_size_update_to_zero_recovers_at_once() {
        let mut d = Decoder::mid_connection();
        let mut b = Vec::new();
        int(&mut b, 0x20, 5, 0);
        int(&mut b, 0x20, 5, 4096);
        insert(&mut b, 0, b"a", b"b");
        d.decode(&b);
        assert!(d.complete);
        assert_eq!(table(&d), (pairs(&[("a", "b")]), 34));
    }

    #[test]
    fn size_updates_evict_and_big_entries_empty_the_table() {
        let mut d = Decoder::new();
        let mut b = Vec::new();
        insert(&mut b, 0, b"blake", b"eats pizza");
        insert(&mut b, 0, b"foo", b"bar");
        int(&mut b, 0x20, 5, 15 + 32 + 1);
        d.decode(&b);
        assert_eq!(table(&d), (pairs(&[("foo", "bar")]), 38));
        let mut b = Vec::new();
        insert(&mut b, 0, b"long", &[b'x'; 500]);
        d.decode(&b);
        assert_eq!(table(&d), (vec![], 0));
    }

    #[test]
    fn a_table_beyond_the_cap_is_held_at_the_cap() {
        let mut d = Decoder::new();
        let mut b = Vec::new();
        int(&mut b, 0x20, 5, 1 << 20);
        for _ in 0..100 {
            insert(&mut b, 0, b"k", &[b'v'; 1000]);
        }
        d.decode(&b);
        assert!(d.size <= TABLE_CAP && d.table.len() == TABLE_CAP / 1033);
    }

    #[test]
    fn long_header_lists_are_cut_but_the_table_stays_right() {
        let mut d = Decoder::new();
        let mut b = Vec::new();
        for _ in 0..MAX_FIELDS {
            indexed(&mut b, 2);
        }
        insert(&mut b, 0, b"last", b"one");
        let block = d.decode(&b);
        assert!(block.truncated && block.fields.len() == MAX_FIELDS);
        assert_eq!(table(&d), (pairs(&[("last", "one")]), 39));
    }

    #[test]
    fn malformed_blocks_stop_and_distrust_the_table() {
        let mut d = Decoder::new();
        let mut b = Vec::new();
        insert(&mut b, 0, b"a", b"b");
        b.push(0x80); // index 0
        let block = d.decode(&b);
        assert!(block.malformed);
        assert_eq!(block.fields, fields(&[("a", "b")]));
        assert!(!d.complete && d.table.is_empty());
        // Truncated string, over-long integer, bad Huffman.
        for bad in [
            &[0x40, 0x05, b'a'][..],
            &[0xff, 0xff, 0xff, 0xff, 0xff, 0x0f],
            &[0x00, 0x81, 0x00, 0x81, 0x00],
        ] {
            assert!(Decoder::new().decode(bad).malformed, "{bad:02x?}");
        }
    }

    #[test]
    fn random_input_never_panics() {
        // xorshift: reproducible noise without a crate.
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for round in 0..20_000 {
            let len = (next() % 300) as usize;
            let mut block: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            // Bias some blocks towards valid-looking literals to reach deeper code.
            if round % 3 == 0 && !block.is_empty() {
                block[0] = 0x40;
            }
            let mut d = if round % 2 == 0 {
                Decoder::new()
            } else {
                Decoder::mid_connection()
            };
            for _ in 0..3 {
                let out = d.decode(&block);
                assert!(out.fields.len() <= MAX_FIELDS && d.size <= TABLE_CAP);
            }
        }
    }
}
