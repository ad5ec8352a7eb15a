//! Response-body decompression: which crate should decode `Content-Encoding`?
//!
//! What it measures: decode throughput, in bytes of *decoded* output per
//! second, of a ~10 MiB JSON body (a deterministic array of realistic records,
//! generated with a seeded `fastrand`) compressed once up front with each
//! coding. The compressed body is fed to the decoder in 16 KiB pieces, as a
//! client gets it off the socket, and the decoder writes into one reused
//! 64 KiB output buffer that is handed on (to `black_box`) each time it has
//! something in it. A new decoder is made for every body, as a client makes
//! one per response. Each candidate is checked once, before timing, to give
//! back the body byte for byte.
//!
//! Why: Breakwater does not decompress bodies yet. This picks the crates by
//! measurement, under the rule that a pure-Rust backend is preferred when it
//! is within ~20 % of the fastest. One group per coding, candidates side by
//! side:
//!
//! * `gzip` and `deflate` (zlib-wrapped, as HTTP's `deflate` is): flate2's
//!   default backend, miniz_oxide, used directly through its streaming
//!   `inflate::stream` API (gzip's header and CRC-32 are done here as flate2
//!   does them, with crc32fast), against flate2 built with the zlib-rs
//!   backend. Cargo unifies features, so one binary cannot hold flate2 with
//!   both backends. zlib-rs needs flate2's `runtime_detection` feature (on by
//!   default, off with `default-features = false`) to turn on its AVX2 and
//!   PCLMULQDQ code; without it zlib-rs runs its scalar code. libdeflater is
//!   not a candidate: libdeflate decodes whole buffers only (all the input,
//!   and an output of known size), so it cannot decode as the body arrives.
//! * `br`: brotli-decompressor only. The `brotli` crate's decoder is
//!   brotli-decompressor itself, re-exported (`brotli` depends on it and
//!   `pub use`s its `BrotliDecompressStream`, `Decompressor`, ...), so there
//!   is no second pure-Rust candidate. `brotli` is used here to compress.
//! * `zstd`: ruzstd (pure Rust) against the zstd crate (bindings to the C
//!   libzstd, built from source with cc). ruzstd decodes whole blocks only
//!   (up to 128 KiB compressed), so its adapter keeps the tail of a piece
//!   that holds part of a block until the next piece completes it.
//!
//! Compression levels are those a server typically uses for dynamic
//! responses: gzip/deflate 6 (zlib's default), brotli quality 6 (window
//! 2^22), zstd level 3 (its default) with the frame checksum on (as the zstd
//! CLI writes it). libzstd checks that checksum; ruzstd leaves it to its
//! caller, so the adapter here checks it.
//!
//! ```sh
//! cargo bench -p breakwater-benches --bench decode -- --warm-up-time 1 --measurement-time 3
//! ```

use std::fmt::Write as _;
use std::hint::black_box;
use std::io::Write as _;

use brotli_decompressor::{BrotliDecompressStream, BrotliResult, BrotliState, StandardAlloc};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

/// The size of each piece of compressed input, as read off the socket.
const PIECE: usize = 16 * 1024;
/// The reused output buffer.
const OUT: usize = 64 * 1024;
/// The decoded body's size: records are added until the array reaches it.
const BODY: usize = 10 << 20;

/// A ~10 MiB JSON array of records shaped like a typical API's: sequential
/// ids, names and e-mail addresses drawn from small vocabularies, numbers,
/// booleans, a nested address with coordinates, a timestamp, tags, and a
/// random hex token (the part that does not compress). Returns the body and
/// its number of records.
fn json_body() -> (Vec<u8>, u32) {
    const FIRST: &[&str] = &[
        "Olivia",
        "Liam",
        "Emma",
        "Noah",
        "Amelia",
        "Oliver",
        "Sophia",
        "Elijah",
        "Charlotte",
        "James",
        "Mia",
        "Lucas",
        "Harper",
        "Mateo",
        "Evelyn",
        "Aiko",
        "Chen",
        "Fatima",
        "Ivan",
        "Zanele",
    ];
    const LAST: &[&str] = &[
        "Smith", "Johnson", "Garcia", "Martinez", "Brown", "Nguyen", "Kowalski", "Okafor",
        "Tanaka", "Müller", "Rossi", "Dubois", "Silva", "Haddad", "Larsen", "Novak",
    ];
    const STREETS: &[&str] = &[
        "Maple Ave",
        "Oak St",
        "Main St",
        "Cedar Ln",
        "Elm Dr",
        "Pine Rd",
        "Lakeview Blvd",
        "Hillcrest Way",
        "River Rd",
        "Sunset Ct",
    ];
    const CITIES: &[&str] = &[
        "Springfield",
        "Riverside",
        "Fairview",
        "Franklin",
        "Greenville",
        "Bristol",
        "Clinton",
        "Madison",
        "Georgetown",
        "Salem",
        "Ashland",
        "Dover",
    ];
    const TAGS: &[&str] = &[
        "admin", "beta", "premium", "trial", "verified", "staff", "partner", "legacy",
    ];

    let mut rng = fastrand::Rng::with_seed(0x00b2_ea4a_7e25);
    let mut out = String::with_capacity(BODY + 1024);
    out.push('[');
    let mut id = 0u32;
    while out.len() < BODY {
        if id > 0 {
            out.push(',');
        }
        let first = FIRST[rng.usize(..FIRST.len())];
        let last = LAST[rng.usize(..LAST.len())];
        write!(
            out,
            r#"{{"id":{id},"name":"{first} {last}","email":"{}.{}{}@example.com","active":{},"score":{}.{:02},"balance":{:.2},"#,
            first.to_lowercase(),
            last.to_lowercase(),
            rng.u32(1..1000),
            rng.bool(),
            rng.u32(0..100),
            rng.u32(0..100),
            (rng.f64() - 0.3) * 10_000.0,
        )
        .unwrap();
        out.push_str(r#""tags":["#);
        for t in 0..rng.usize(0..4) {
            if t > 0 {
                out.push(',');
            }
            write!(out, r#""{}""#, TAGS[rng.usize(..TAGS.len())]).unwrap();
        }
        write!(
            out,
            r#"],"address":{{"street":"{} {}","city":"{}","zip":"{:05}","geo":{{"lat":{:.6},"lng":{:.6}}}}},"created_at":"20{:02}-{:02}-{:02}T{:02}:{:02}:{:02}Z","token":"{:016x}"}}"#,
            rng.u32(1..9999),
            STREETS[rng.usize(..STREETS.len())],
            CITIES[rng.usize(..CITIES.len())],
            rng.u32(0..100_000),
            rng.f64() * 180.0 - 90.0,
            rng.f64() * 360.0 - 180.0,
            rng.u32(18..26),
            rng.u32(1..13),
            rng.u32(1..29),
            rng.u32(0..24),
            rng.u32(0..60),
            rng.u32(0..60),
            rng.u64(..),
        )
        .unwrap();
        id += 1;
    }
    out.push(']');
    (out.into_bytes(), id)
}

/// A streaming decoder as a client drives it: fed the body piece by piece,
/// handing decoded bytes on through `sink` in slices of `out`.
trait Decode {
    fn new() -> Self;
    /// Consumes all of `input`, keeping any part it cannot use yet.
    fn feed(&mut self, input: &[u8], out: &mut [u8], sink: &mut impl FnMut(&[u8]));
    /// The body has ended: hands on what is left and checks the stream ended
    /// where it should.
    fn finish(&mut self, out: &mut [u8], sink: &mut impl FnMut(&[u8]));
}

/// Decodes `compressed` in 16 KiB pieces, returning the decoded length.
fn run<D: Decode>(compressed: &[u8], out: &mut [u8], sink: &mut impl FnMut(&[u8])) -> usize {
    let mut total = 0;
    let mut counted = |bytes: &[u8]| {
        total += bytes.len();
        sink(bytes);
    };
    let mut decoder = D::new();
    for piece in compressed.chunks(PIECE) {
        decoder.feed(piece, out, &mut counted);
    }
    decoder.finish(out, &mut counted);
    total
}

// ---- miniz_oxide (flate2's default backend), used directly ----

/// Raw or zlib-wrapped DEFLATE through `miniz_oxide::inflate::stream`.
struct MinizInflate {
    state: Box<miniz_oxide::inflate::stream::InflateState>,
    ended: bool,
}

impl MinizInflate {
    fn with_format(format: miniz_oxide::DataFormat) -> Self {
        Self {
            state: miniz_oxide::inflate::stream::InflateState::new_boxed(format),
            ended: false,
        }
    }

    /// Inflates from `input` until it is used up or the stream ends;
    /// returns how much of `input` was used (less than all only at the end).
    fn inflate(&mut self, mut input: &[u8], out: &mut [u8], sink: &mut impl FnMut(&[u8])) -> usize {
        use miniz_oxide::{MZError, MZFlush, MZStatus};
        let len = input.len();
        while !self.ended {
            let r =
                miniz_oxide::inflate::stream::inflate(&mut self.state, input, out, MZFlush::None);
            input = &input[r.bytes_consumed..];
            if r.bytes_written > 0 {
                sink(&out[..r.bytes_written]);
            }
            match r.status {
                Ok(MZStatus::StreamEnd) => self.ended = true,
                Ok(_) if input.is_empty() && r.bytes_written < out.len() => break,
                Ok(_) => {}
                // No progress: it wants more input than there is.
                Err(MZError::Buf) if input.is_empty() => break,
                Err(e) => panic!("miniz_oxide: {e:?}"),
            }
        }
        len - input.len()
    }
}

/// HTTP `deflate`: zlib-wrapped (Adler-32 checked).
struct MinizZlib(MinizInflate);

impl Decode for MinizZlib {
    fn new() -> Self {
        Self(MinizInflate::with_format(miniz_oxide::DataFormat::Zlib))
    }
    fn feed(&mut self, input: &[u8], out: &mut [u8], sink: &mut impl FnMut(&[u8])) {
        let used = self.0.inflate(input, out, sink);
        assert_eq!(used, input.len(), "data after the zlib stream");
    }
    fn finish(&mut self, _out: &mut [u8], _sink: &mut impl FnMut(&[u8])) {
        assert!(self.0.ended, "zlib stream cut short");
    }
}

/// HTTP `gzip`: the gzip member's header and trailer handled here, its
/// DEFLATE data by miniz_oxide and its CRC-32 by crc32fast, as flate2's
/// `GzDecoder` does with its default backend.
struct MinizGzip {
    inflate: MinizInflate,
    /// The header's bytes until it is whole, then the trailer's.
    held: Vec<u8>,
    in_header: bool,
    crc: crc32fast::Hasher,
    size: u32,
}

/// The length of the gzip header at the start of `buf`, or `None` if `buf`
/// does not hold all of it yet.
fn gzip_header_len(buf: &[u8]) -> Option<usize> {
    const FHCRC: u8 = 2;
    const FEXTRA: u8 = 4;
    const FNAME: u8 = 8;
    const FCOMMENT: u8 = 16;
    if buf.len() < 10 {
        return None;
    }
    assert!(buf[..3] == [0x1f, 0x8b, 8], "not a gzip member");
    let flags = buf[3];
    let mut at = 10;
    if flags & FEXTRA != 0 {
        let extra = usize::from(u16::from_le_bytes([*buf.get(at)?, *buf.get(at + 1)?]));
        at += 2 + extra;
    }
    for flag in [FNAME, FCOMMENT] {
        if flags & flag != 0 {
            at += buf.get(at..)?.iter().position(|&b| b == 0)? + 1;
        }
    }
    if flags & FHCRC != 0 {
        at += 2;
    }
    (at <= buf.len()).then_some(at)
}

impl MinizGzip {
    fn body(&mut self, input: &[u8], out: &mut [u8], sink: &mut impl FnMut(&[u8])) {
        let (crc, size) = (&mut self.crc, &mut self.size);
        let used = self.inflate.inflate(input, out, &mut |bytes: &[u8]| {
            crc.update(bytes);
            *size = size.wrapping_add(bytes.len() as u32);
            sink(bytes);
        });
        self.held.extend_from_slice(&input[used..]);
    }
}

impl Decode for MinizGzip {
    fn new() -> Self {
        Self {
            inflate: MinizInflate::with_format(miniz_oxide::DataFormat::Raw),
            held: Vec::new(),
            in_header: true,
            crc: crc32fast::Hasher::new(),
            size: 0,
        }
    }
    fn feed(&mut self, input: &[u8], out: &mut [u8], sink: &mut impl FnMut(&[u8])) {
        if self.in_header {
            self.held.extend_from_slice(input);
            let Some(header) = gzip_header_len(&self.held) else {
                return;
            };
            self.in_header = false;
            let rest = self.held.split_off(header);
            self.held.clear();
            self.body(&rest, out, sink);
        } else if self.inflate.ended {
            self.held.extend_from_slice(input);
        } else {
            self.body(input, out, sink);
        }
    }
    fn finish(&mut self, _out: &mut [u8], _sink: &mut impl FnMut(&[u8])) {
        assert!(self.inflate.ended, "gzip member cut short");
        assert_eq!(self.held.len(), 8, "gzip trailer");
        let crc = u32::from_le_bytes(self.held[..4].try_into().unwrap());
        let size = u32::from_le_bytes(self.held[4..].try_into().unwrap());
        assert_eq!(crc, self.crc.clone().finalize(), "gzip CRC-32");
        assert_eq!(size, self.size, "gzip ISIZE");
    }
}

// ---- flate2 with the zlib-rs backend ----

/// flate2's streaming `Decompress`; for gzip, zlib-rs reads the header and
/// checks the CRC-32 itself (`Decompress::new_gzip`).
struct Flate2 {
    decompress: flate2::Decompress,
    ended: bool,
}

impl Flate2 {
    fn feed(&mut self, mut input: &[u8], out: &mut [u8], sink: &mut impl FnMut(&[u8])) {
        while !self.ended {
            let (before_in, before_out) = (self.decompress.total_in(), self.decompress.total_out());
            let status = self
                .decompress
                .decompress(input, out, flate2::FlushDecompress::None)
                .expect("flate2 (zlib-rs)");
            let used = (self.decompress.total_in() - before_in) as usize;
            let written = (self.decompress.total_out() - before_out) as usize;
            input = &input[used..];
            if written > 0 {
                sink(&out[..written]);
            }
            match status {
                flate2::Status::StreamEnd => self.ended = true,
                _ if input.is_empty() && written < out.len() => break,
                _ if used == 0 && written == 0 => panic!("flate2 (zlib-rs) made no progress"),
                _ => {}
            }
        }
        assert!(input.is_empty(), "data after the stream");
    }
}

struct Flate2Zlib(Flate2);

impl Decode for Flate2Zlib {
    fn new() -> Self {
        Self(Flate2 {
            decompress: flate2::Decompress::new(true),
            ended: false,
        })
    }
    fn feed(&mut self, input: &[u8], out: &mut [u8], sink: &mut impl FnMut(&[u8])) {
        self.0.feed(input, out, sink);
    }
    fn finish(&mut self, _out: &mut [u8], _sink: &mut impl FnMut(&[u8])) {
        assert!(self.0.ended, "zlib stream cut short");
    }
}

struct Flate2Gzip(Flate2);

impl Decode for Flate2Gzip {
    fn new() -> Self {
        Self(Flate2 {
            decompress: flate2::Decompress::new_gzip(15),
            ended: false,
        })
    }
    fn feed(&mut self, input: &[u8], out: &mut [u8], sink: &mut impl FnMut(&[u8])) {
        self.0.feed(input, out, sink);
    }
    fn finish(&mut self, _out: &mut [u8], _sink: &mut impl FnMut(&[u8])) {
        assert!(self.0.ended, "gzip member cut short");
    }
}

// ---- brotli-decompressor ----

struct Brotli {
    state: BrotliState<StandardAlloc, StandardAlloc, StandardAlloc>,
    ended: bool,
}

impl Decode for Brotli {
    fn new() -> Self {
        Self {
            // Strict: RFC 7932 brotli, not the large-window variant.
            state: BrotliState::new_strict(
                StandardAlloc::default(),
                StandardAlloc::default(),
                StandardAlloc::default(),
            ),
            ended: false,
        }
    }
    fn feed(&mut self, input: &[u8], out: &mut [u8], sink: &mut impl FnMut(&[u8])) {
        let mut available_in = input.len();
        let mut input_offset = 0;
        let mut total_out = 0;
        while !self.ended {
            let mut available_out = out.len();
            let mut output_offset = 0;
            let result = BrotliDecompressStream(
                &mut available_in,
                &mut input_offset,
                input,
                &mut available_out,
                &mut output_offset,
                out,
                &mut total_out,
                &mut self.state,
            );
            if output_offset > 0 {
                sink(&out[..output_offset]);
            }
            match result {
                BrotliResult::ResultSuccess => self.ended = true,
                BrotliResult::NeedsMoreInput => break,
                BrotliResult::NeedsMoreOutput => {}
                BrotliResult::ResultFailure => panic!("brotli-decompressor: corrupt stream"),
            }
        }
        assert_eq!(available_in, 0, "data after the brotli stream");
    }
    fn finish(&mut self, _out: &mut [u8], _sink: &mut impl FnMut(&[u8])) {
        assert!(self.ended, "brotli stream cut short");
    }
}

// ---- zstd (C libzstd) ----

struct Zstd {
    decoder: zstd::stream::raw::Decoder<'static>,
    ended: bool,
}

impl Decode for Zstd {
    fn new() -> Self {
        Self {
            decoder: zstd::stream::raw::Decoder::new().expect("zstd decoder"),
            ended: false,
        }
    }
    fn feed(&mut self, mut input: &[u8], out: &mut [u8], sink: &mut impl FnMut(&[u8])) {
        use zstd::stream::raw::Operation;
        loop {
            let status = self.decoder.run_on_buffers(input, out).expect("zstd");
            input = &input[status.bytes_read..];
            if status.bytes_written > 0 {
                sink(&out[..status.bytes_written]);
            }
            // 0: the frame is decoded, checked and flushed.
            self.ended = status.remaining == 0;
            if input.is_empty() && status.bytes_written < out.len() {
                break;
            }
        }
    }
    fn finish(&mut self, _out: &mut [u8], _sink: &mut impl FnMut(&[u8])) {
        assert!(self.ended, "zstd frame cut short");
    }
}

// ---- ruzstd ----

struct Ruzstd {
    decoder: ruzstd::decoding::FrameDecoder,
    /// Input that holds only part of a block, kept until the rest comes.
    held: Vec<u8>,
}

impl Ruzstd {
    /// Decodes every whole block in `source` and hands on what the decoder
    /// lets go of; returns how much of `source` was used.
    fn decode(&mut self, source: &[u8], out: &mut [u8], sink: &mut impl FnMut(&[u8])) -> usize {
        let mut used = 0;
        loop {
            let before = self.decoder.bytes_read_from_source();
            let (_, written) = self
                .decoder
                .decode_from_to(&source[used..], out)
                .expect("ruzstd");
            // Not the count it returns: that says 4 for a frame's checksum
            // even when fewer than 4 bytes of it are there (and then takes
            // none). Its own counter says what it took.
            let read = (self.decoder.bytes_read_from_source() - before) as usize;
            used += read;
            if written > 0 {
                sink(&out[..written]);
            }
            if read == 0 && written == 0 {
                return used;
            }
        }
    }
}

impl Decode for Ruzstd {
    fn new() -> Self {
        Self {
            decoder: ruzstd::decoding::FrameDecoder::new(),
            held: Vec::new(),
        }
    }
    fn feed(&mut self, input: &[u8], out: &mut [u8], sink: &mut impl FnMut(&[u8])) {
        if self.held.is_empty() {
            // The usual case: decode straight from the piece, keep its tail.
            let used = self.decode(input, out, sink);
            self.held.extend_from_slice(&input[used..]);
        } else {
            let mut held = std::mem::take(&mut self.held);
            held.extend_from_slice(input);
            let used = self.decode(&held, out, sink);
            held.drain(..used);
            self.held = held;
        }
    }
    fn finish(&mut self, out: &mut [u8], sink: &mut impl FnMut(&[u8])) {
        let held = std::mem::take(&mut self.held);
        let used = self.decode(&held, out, sink);
        assert_eq!(used, held.len(), "zstd frame cut short, or data after it");
        assert!(self.decoder.is_finished(), "zstd frame cut short");
        // ruzstd leaves checking the frame's checksum to its caller.
        let expected = self.decoder.get_checksum_from_data();
        assert!(expected.is_some(), "the bench's frames carry a checksum");
        assert_eq!(
            expected,
            self.decoder.get_calculated_checksum(),
            "zstd checksum"
        );
    }
}

// ---- the benchmark ----

struct Coded {
    name: &'static str,
    bytes: Vec<u8>,
}

fn compress(json: &[u8]) -> [Coded; 4] {
    let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
    gzip.write_all(json).unwrap();
    let mut zlib = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::new(6));
    zlib.write_all(json).unwrap();
    let mut br = brotli::CompressorWriter::new(Vec::new(), 64 * 1024, 6, 22);
    br.write_all(json).unwrap();
    let mut zstd = zstd::stream::Encoder::new(Vec::new(), 3).unwrap();
    zstd.include_checksum(true).unwrap();
    zstd.write_all(json).unwrap();
    [
        Coded {
            name: "gzip",
            bytes: gzip.finish().unwrap(),
        },
        Coded {
            name: "deflate",
            bytes: zlib.finish().unwrap(),
        },
        Coded {
            name: "br",
            bytes: br.into_inner(),
        },
        Coded {
            name: "zstd",
            bytes: zstd.finish().unwrap(),
        },
    ]
}

/// One candidate: checked to give back `json` exactly, then timed.
fn candidate<D: Decode>(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    id: &str,
    compressed: &[u8],
    json: &[u8],
) {
    let mut out = vec![0; OUT];
    let mut decoded = Vec::with_capacity(json.len());
    run::<D>(compressed, &mut out, &mut |bytes: &[u8]| {
        decoded.extend_from_slice(bytes)
    });
    assert!(decoded == json, "{id} did not give the body back");

    group.bench_function(id, |b| {
        b.iter(|| {
            let n = run::<D>(black_box(compressed), &mut out, &mut |bytes: &[u8]| {
                black_box(bytes);
            });
            assert_eq!(n, json.len());
        })
    });
}

fn decode(c: &mut Criterion) {
    let (json, records) = json_body();
    let parsed: serde_json::Value = serde_json::from_slice(&json).expect("the body is JSON");
    assert_eq!(parsed.as_array().map(Vec::len), Some(records as usize));
    drop(parsed);
    let coded = compress(&json);
    eprintln!(
        "decoded body: {} bytes ({:.2} MiB) of JSON, {records} records",
        json.len(),
        json.len() as f64 / f64::from(1 << 20)
    );
    for Coded { name, bytes } in &coded {
        eprintln!(
            "{name}: {} bytes compressed ({:.2} MiB), ratio {:.2}",
            bytes.len(),
            bytes.len() as f64 / f64::from(1 << 20),
            json.len() as f64 / bytes.len() as f64
        );
    }

    for Coded { name, bytes } in &coded {
        let mut group = c.benchmark_group(format!("decode/{name}"));
        group.throughput(Throughput::Bytes(json.len() as u64));
        // Each iteration decodes 10 MiB (tens of milliseconds).
        group.sample_size(10);
        match *name {
            "gzip" => {
                candidate::<MinizGzip>(&mut group, "miniz_oxide", bytes, &json);
                candidate::<Flate2Gzip>(&mut group, "flate2 zlib-rs", bytes, &json);
            }
            "deflate" => {
                candidate::<MinizZlib>(&mut group, "miniz_oxide", bytes, &json);
                candidate::<Flate2Zlib>(&mut group, "flate2 zlib-rs", bytes, &json);
            }
            "br" => candidate::<Brotli>(&mut group, "brotli-decompressor", bytes, &json),
            "zstd" => {
                candidate::<Ruzstd>(&mut group, "ruzstd", bytes, &json);
                candidate::<Zstd>(&mut group, "zstd (C libzstd)", bytes, &json);
            }
            _ => unreachable!(),
        }
        group.finish();
    }
}

criterion_group!(benches, decode);
criterion_main!(benches);
