//! Decoding a coded response body as it streams (docs/spec/content-coding.md).
//!
//! The core decides which coding a body has, how far it may expand and how a
//! gzip member is framed; this module runs the crates that inflate. Every
//! decoder is driven with bounded buffers, pull style: a piece of compressed
//! input goes in, at most [`OUTPUT_PIECE`] decoded bytes come out, and input
//! that did not fit waits for the next read. A decompression bomb therefore
//! never holds more than one output piece in memory before the limits see it.

use breakwater_core::content::{BodyCoding, ContentCoding, DecodeLimits};
use bytes::{Buf, Bytes};

use crate::error::{Error, ErrorKind};

/// The most decoded bytes one step hands out.
const OUTPUT_PIECE: usize = 64 * 1024;

/// The codings this build decodes, in order of preference.
pub(crate) const SUPPORTED: &[ContentCoding] = &[
    #[cfg(feature = "zstd")]
    ContentCoding::Zstd,
    #[cfg(feature = "brotli")]
    ContentCoding::Brotli,
    #[cfg(feature = "gzip")]
    ContentCoding::Gzip,
    #[cfg(feature = "deflate")]
    ContentCoding::Deflate,
];

/// A coded body being decoded.
pub(crate) struct Decoder {
    codec: Codec,
    limits: DecodeLimits,
    /// Compressed bytes read but not yet consumed.
    pending: Bytes,
    /// Compressed bytes the codec has consumed: the limits credit only
    /// these, so that a bomb read whole is checked as it expands, not
    /// granted its whole allowance when it arrives.
    compressed: u64,
    decoded: u64,
    /// The coded stream reached its end.
    finished: bool,
    /// The last step filled its output: the codec may hold more, even with
    /// no input pending.
    output_may_remain: bool,
    /// An output buffer kept for the next step when its last piece was
    /// copied out rather than handed over.
    spare: Vec<u8>,
}

impl std::fmt::Debug for Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decoder")
            .field("compressed", &self.compressed)
            .field("decoded", &self.decoded)
            .finish_non_exhaustive()
    }
}

/// How far one step of a codec went. Its output is appended to a buffer,
/// within the buffer's capacity.
struct Progress {
    consumed: usize,
    produced: usize,
    /// The coded stream ended with this step.
    ended: bool,
}

enum Codec {
    #[cfg(feature = "gzip")]
    Gzip(Box<gzip::Gzip>),
    #[cfg(feature = "deflate")]
    Deflate(Box<deflate::Deflate>),
    #[cfg(feature = "brotli")]
    Brotli(Box<brotli::Brotli>),
    #[cfg(feature = "zstd")]
    Zstd(Box<zstd_codec::Zstd>),
}

impl Decoder {
    /// A decoder for a body of `coding`, if this build decodes it.
    pub(crate) fn new(coding: BodyCoding, limits: DecodeLimits) -> Option<Decoder> {
        let BodyCoding::Coded(coding) = coding else {
            return None;
        };
        let codec = match coding {
            #[cfg(feature = "gzip")]
            ContentCoding::Gzip => Codec::Gzip(Box::default()),
            #[cfg(feature = "deflate")]
            ContentCoding::Deflate => Codec::Deflate(Box::default()),
            #[cfg(feature = "brotli")]
            ContentCoding::Brotli => Codec::Brotli(Box::default()),
            #[cfg(feature = "zstd")]
            ContentCoding::Zstd => Codec::Zstd(Box::new(zstd_codec::Zstd::new()?)),
            #[allow(unreachable_patterns)]
            _ => return None,
        };
        Some(Decoder {
            codec,
            limits,
            pending: Bytes::new(),
            compressed: 0,
            decoded: 0,
            finished: false,
            output_may_remain: false,
            spare: Vec::new(),
        })
    }

    /// Whether decoding can go on without more input: input is pending, or
    /// the codec may still hold output.
    pub(crate) fn has_pending(&self) -> bool {
        !self.pending.is_empty() || self.output_may_remain
    }

    /// Takes the next piece of the coded body.
    pub(crate) fn push(&mut self, piece: Bytes) {
        if self.pending.is_empty() {
            self.pending = piece;
        } else {
            // A codec that could not go on without more input: rare, and small.
            let mut joined = Vec::with_capacity(self.pending.len() + piece.len());
            joined.extend_from_slice(&self.pending);
            joined.extend_from_slice(&piece);
            self.pending = joined.into();
        }
    }

    /// Decodes from the pending input: up to [`OUTPUT_PIECE`] bytes, or
    /// `None` when the pending input is used up without output.
    pub(crate) fn decode(&mut self) -> Result<Option<Bytes>, Error> {
        // Output goes into spare capacity: the inflaters write it without
        // the buffer being zeroed first.
        let mut out = std::mem::take(&mut self.spare);
        out.reserve_exact(OUTPUT_PIECE);
        let flushing = self.output_may_remain;
        self.output_may_remain = false;
        while out.len() < OUTPUT_PIECE && (!self.pending.is_empty() || flushing) {
            if self.finished && self.pending.is_empty() {
                break;
            }
            if self.finished {
                if !self.codec.restarts(&self.pending) {
                    return Err(decode_error(
                        "the compressed body has data after its end".to_owned(),
                    ));
                }
                self.finished = false;
            }
            let step = self.codec.step(&self.pending, &mut out)?;
            self.pending.advance(step.consumed);
            self.compressed += step.consumed as u64;
            self.finished = step.ended;
            if step.consumed == 0 && step.produced == 0 && !step.ended {
                // The codec needs more input than this to go on.
                break;
            }
        }
        self.output_may_remain = !self.finished && out.len() >= OUTPUT_PIECE;
        self.decoded += out.len() as u64;
        self.limits
            .check(self.compressed, self.decoded)
            .map_err(|e| Error::new(ErrorKind::BodyLimit).with_message(e.to_string()))?;
        Ok(self.hand_out(out))
    }

    /// A decoded piece as `Bytes`. A piece that fills less than half its
    /// buffer is copied out and the buffer kept: handed over, it would pin
    /// the whole buffer for a few bytes, and a body sent in tiny coded
    /// pieces would hold many times its size.
    fn hand_out(&mut self, mut out: Vec<u8>) -> Option<Bytes> {
        if out.is_empty() {
            self.spare = out;
            return None;
        }
        if out.len() * 2 >= out.capacity() {
            return Some(out.into());
        }
        let piece = Bytes::copy_from_slice(&out);
        out.clear();
        self.spare = out;
        Some(piece)
    }

    /// The coded body's end on the wire: whatever the codec still holds
    /// comes out, and a stream that did not reach its end is truncated.
    pub(crate) fn finish(&mut self) -> Result<Option<Bytes>, Error> {
        if self.finished {
            return Ok(None);
        }
        if !self.pending.is_empty() {
            return Err(decode_error(
                "the compressed body ended in the middle of its coded stream".to_owned(),
            ));
        }
        if self.compressed == 0 {
            // No coded byte at all: an empty body, as a server sends for an
            // empty representation whatever its Content-Encoding says.
            self.finished = true;
            return Ok(None);
        }
        let mut out = std::mem::take(&mut self.spare);
        out.reserve_exact(OUTPUT_PIECE);
        let step = self.codec.step(&[], &mut out)?;
        self.decoded += step.produced as u64;
        self.limits
            .check(self.compressed, self.decoded)
            .map_err(|e| Error::new(ErrorKind::BodyLimit).with_message(e.to_string()))?;
        self.finished = step.ended;
        if step.produced > 0 {
            return Ok(self.hand_out(out));
        }
        if !step.ended {
            return Err(decode_error(
                "the compressed body ended before its coded stream did".to_owned(),
            ));
        }
        Ok(None)
    }
}

fn decode_error(message: String) -> Error {
    Error::new(ErrorKind::Decode).with_message(message)
}

impl Codec {
    fn step(&mut self, input: &[u8], output: &mut Vec<u8>) -> Result<Progress, Error> {
        match self {
            #[cfg(feature = "gzip")]
            Codec::Gzip(codec) => codec.step(input, output),
            #[cfg(feature = "deflate")]
            Codec::Deflate(codec) => codec.step(input, output),
            #[cfg(feature = "brotli")]
            Codec::Brotli(codec) => into_spare(output, |out| codec.step(input, out)),
            #[cfg(feature = "zstd")]
            Codec::Zstd(codec) => into_spare(output, |out| codec.step(input, out)),
        }
    }

    /// Whether input after the end of a coded stream starts another one the
    /// format allows to follow (gzip members, zstd frames); the codec is then
    /// reset for it.
    fn restarts(&mut self, _next: &[u8]) -> bool {
        match self {
            #[cfg(feature = "gzip")]
            Codec::Gzip(codec) => {
                codec.next_member();
                true
            }
            #[cfg(feature = "zstd")]
            Codec::Zstd(_) => true,
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }
}

/// Runs a decoder that writes only into initialised memory on the buffer's
/// spare capacity, zeroed for it.
#[cfg(any(feature = "brotli", feature = "zstd"))]
fn into_spare(
    output: &mut Vec<u8>,
    step: impl FnOnce(&mut [u8]) -> Result<Progress, Error>,
) -> Result<Progress, Error> {
    let start = output.len();
    output.resize(output.capacity(), 0);
    let result = step(&mut output[start..]);
    let produced = result.as_ref().map_or(0, |p| p.produced);
    output.truncate(start + produced);
    result
}

#[cfg(any(feature = "gzip", feature = "deflate"))]
fn inflate(
    inflater: &mut flate2::Decompress,
    input: &[u8],
    output: &mut Vec<u8>,
) -> Result<Progress, Error> {
    let (before_in, before_out) = (inflater.total_in(), inflater.total_out());
    let flush = if input.is_empty() {
        flate2::FlushDecompress::Finish
    } else {
        flate2::FlushDecompress::None
    };
    let status = inflater
        .decompress_vec(input, output, flush)
        .map_err(|e| decode_error(format!("the compressed body is corrupt ({e})")))?;
    Ok(Progress {
        consumed: (inflater.total_in() - before_in) as usize,
        produced: (inflater.total_out() - before_out) as usize,
        ended: status == flate2::Status::StreamEnd,
    })
}

#[cfg(feature = "gzip")]
mod gzip {
    //! gzip: the member framing is the core's; the deflate data between is flate2's.

    use breakwater_core::content::{check_gzip_trailer, gzip_header_len};

    use super::{decode_error, inflate, Progress};
    use crate::error::Error;

    enum Part {
        /// Gathering the header (it may arrive split).
        Header(Vec<u8>),
        Data,
        /// Gathering the 8-byte trailer.
        Trailer(Vec<u8>),
    }

    pub(super) struct Gzip {
        part: Part,
        inflater: flate2::Decompress,
        crc: flate2::Crc,
    }

    impl Default for Gzip {
        fn default() -> Self {
            Gzip {
                part: Part::Header(Vec::new()),
                inflater: flate2::Decompress::new(false),
                crc: flate2::Crc::new(),
            }
        }
    }

    impl Gzip {
        /// Readies the codec for another member, reusing its inflater:
        /// a body of many tiny members costs no allocation per member.
        pub(super) fn next_member(&mut self) {
            self.part = Part::Header(Vec::new());
            self.inflater.reset(false);
            self.crc.reset();
        }

        pub(super) fn step(
            &mut self,
            input: &[u8],
            output: &mut Vec<u8>,
        ) -> Result<Progress, Error> {
            match &mut self.part {
                Part::Header(seen) => {
                    if input.is_empty() {
                        return Ok(Progress {
                            consumed: 0,
                            produced: 0,
                            ended: false,
                        });
                    }
                    // Measured in place when the header came in one piece,
                    // as it nearly always does; gathered only when it is split.
                    if seen.is_empty() {
                        if let Some(len) =
                            gzip_header_len(input).map_err(|e| decode_error(e.to_string()))?
                        {
                            self.part = Part::Data;
                            return Ok(Progress {
                                consumed: len,
                                produced: 0,
                                ended: false,
                            });
                        }
                    }
                    let before = seen.len();
                    let room =
                        (breakwater_core::content::MAX_GZIP_HEADER + 1).saturating_sub(before);
                    let take = input.len().min(room.max(1));
                    seen.extend_from_slice(&input[..take]);
                    match gzip_header_len(seen).map_err(|e| decode_error(e.to_string()))? {
                        Some(len) => {
                            self.part = Part::Data;
                            Ok(Progress {
                                consumed: len - before,
                                produced: 0,
                                ended: false,
                            })
                        }
                        None => Ok(Progress {
                            consumed: take,
                            produced: 0,
                            ended: false,
                        }),
                    }
                }
                Part::Data => {
                    let start = output.len();
                    let mut progress = inflate(&mut self.inflater, input, output)?;
                    self.crc.update(&output[start..]);
                    if progress.ended {
                        self.part = Part::Trailer(Vec::with_capacity(8));
                        progress.ended = false;
                    }
                    Ok(progress)
                }
                Part::Trailer(seen) => {
                    let take = input.len().min(8 - seen.len());
                    seen.extend_from_slice(&input[..take]);
                    let mut ended = false;
                    if let Ok(trailer) = <[u8; 8]>::try_from(seen.as_slice()) {
                        check_gzip_trailer(trailer, self.crc.sum(), u64::from(self.crc.amount()))
                            .map_err(|e| decode_error(e.to_string()))?;
                        ended = true;
                    }
                    Ok(Progress {
                        consumed: take,
                        produced: 0,
                        ended,
                    })
                }
            }
        }
    }
}

#[cfg(feature = "deflate")]
mod deflate {
    //! deflate: a zlib stream, or a bare deflate stream from a server that
    //! reads RFC 9110's "deflate" the old way; the first two bytes tell.

    use breakwater_core::content::is_zlib_header;

    use super::{inflate, Progress};
    use crate::error::Error;

    #[derive(Default)]
    pub(super) struct Deflate {
        /// The first byte, while the second is awaited.
        first: Option<u8>,
        inflater: Option<flate2::Decompress>,
    }

    impl Deflate {
        pub(super) fn step(
            &mut self,
            input: &[u8],
            output: &mut Vec<u8>,
        ) -> Result<Progress, Error> {
            if let Some(inflater) = &mut self.inflater {
                return inflate(inflater, input, output);
            }
            let waiting = Progress {
                consumed: 0,
                produced: 0,
                ended: false,
            };
            let (first, second) = match (self.first, input) {
                (_, []) => return Ok(waiting),
                (None, [only]) => {
                    self.first = Some(*only);
                    return Ok(Progress {
                        consumed: 1,
                        ..waiting
                    });
                }
                (None, [a, b, ..]) => (*a, *b),
                (Some(a), [b, ..]) => (a, *b),
            };
            let mut inflater = flate2::Decompress::new(is_zlib_header(first, second));
            let progress = match self.first.take() {
                None => inflate(&mut inflater, input, output)?,
                // The first byte came alone in an earlier piece: it goes in
                // now, ahead of this piece, through a small copy (once per body).
                Some(held) => {
                    let mut joined = Vec::with_capacity(input.len() + 1);
                    joined.push(held);
                    joined.extend_from_slice(input);
                    let progress = inflate(&mut inflater, &joined, output)?;
                    if progress.consumed == 0 {
                        self.first = Some(held);
                        return Ok(waiting);
                    }
                    Progress {
                        consumed: progress.consumed - 1,
                        ..progress
                    }
                }
            };
            self.inflater = Some(inflater);
            Ok(progress)
        }
    }
}
#[cfg(feature = "brotli")]
mod brotli {
    //! br: brotli-decompressor's streaming state machine.

    use brotli_decompressor::{BrotliDecompressStream, BrotliResult, BrotliState, StandardAlloc};

    use super::{decode_error, Progress};
    use crate::error::Error;

    pub(super) struct Brotli {
        state: BrotliState<StandardAlloc, StandardAlloc, StandardAlloc>,
    }

    impl Default for Brotli {
        fn default() -> Self {
            Brotli {
                state: BrotliState::new(
                    StandardAlloc::default(),
                    StandardAlloc::default(),
                    StandardAlloc::default(),
                ),
            }
        }
    }

    impl Brotli {
        pub(super) fn step(&mut self, input: &[u8], output: &mut [u8]) -> Result<Progress, Error> {
            let (mut available_in, mut input_offset) = (input.len(), 0);
            let (mut available_out, mut output_offset) = (output.len(), 0);
            let mut total_out = 0;
            let result = BrotliDecompressStream(
                &mut available_in,
                &mut input_offset,
                input,
                &mut available_out,
                &mut output_offset,
                output,
                &mut total_out,
                &mut self.state,
            );
            if let BrotliResult::ResultFailure = result {
                return Err(decode_error("the brotli body is corrupt".to_owned()));
            }
            Ok(Progress {
                consumed: input_offset,
                produced: output_offset,
                ended: matches!(result, BrotliResult::ResultSuccess),
            })
        }
    }
}

#[cfg(feature = "zstd")]
mod zstd_codec {
    //! zstd: the reference library's streaming decoder.

    use zstd::stream::raw::{DParameter, Decoder, InBuffer, Operation, OutBuffer};

    use super::{decode_error, Progress};
    use crate::error::Error;

    pub(super) struct Zstd {
        decoder: Decoder<'static>,
    }

    impl Zstd {
        pub(super) fn new() -> Option<Zstd> {
            // A window over 8 MiB is refused: HTTP's zstd coding allows no
            // more (docs/spec/content-coding.md), and it bounds the decoder's memory.
            let mut decoder = Decoder::new().ok()?;
            decoder.set_parameter(DParameter::WindowLogMax(23)).ok()?;
            Some(Zstd { decoder })
        }

        pub(super) fn step(&mut self, input: &[u8], output: &mut [u8]) -> Result<Progress, Error> {
            let mut input = InBuffer::around(input);
            let mut out = OutBuffer::around(output);
            let hint = self
                .decoder
                .run(&mut input, &mut out)
                .map_err(|e| decode_error(format!("the zstd body is corrupt ({e})")))?;
            Ok(Progress {
                consumed: input.pos(),
                produced: out.pos(),
                ended: hint == 0,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::io::Write;

    /// Decodes `coded` fed in pieces of the given sizes (cycled), as reads
    /// off a socket would bring it.
    fn decode_in_pieces(
        coding: ContentCoding,
        coded: &[u8],
        sizes: &[usize],
    ) -> Result<Vec<u8>, Error> {
        let mut decoder = Decoder::new(BodyCoding::Coded(coding), DecodeLimits::default()).unwrap();
        let mut out = Vec::new();
        let mut at = 0;
        let mut sizes = sizes.iter().cycle();
        while at < coded.len() {
            let size = (*sizes.next().unwrap()).clamp(1, coded.len() - at);
            decoder.push(Bytes::copy_from_slice(&coded[at..at + size]));
            at += size;
            while let Some(piece) = decoder.decode()? {
                assert!(piece.len() <= OUTPUT_PIECE);
                out.extend_from_slice(&piece);
            }
        }
        while let Some(piece) = decoder.finish()? {
            out.extend_from_slice(&piece);
        }
        Ok(out)
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    fn zlib(data: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    fn raw_deflate(data: &[u8]) -> Vec<u8> {
        let mut encoder =
            flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    /// Bodies with long runs (so that output outgrows input) and noise.
    fn body() -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec((any::<u8>(), 1usize..3000), 0..40).prop_map(|runs| {
            runs.into_iter()
                .flat_map(|(byte, len)| std::iter::repeat_n(byte, len))
                .collect()
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn any_split_decodes_to_the_original(
            data in body(),
            sizes in prop::collection::vec(1usize..5000, 1..8),
        ) {
            let mut two_members = gzip(&data[..data.len() / 2]);
            two_members.extend_from_slice(&gzip(&data[data.len() / 2..]));
            prop_assert_eq!(&decode_in_pieces(ContentCoding::Gzip, &two_members, &sizes).unwrap(), &data);
            prop_assert_eq!(&decode_in_pieces(ContentCoding::Deflate, &zlib(&data), &sizes).unwrap(), &data);
            prop_assert_eq!(&decode_in_pieces(ContentCoding::Deflate, &raw_deflate(&data), &sizes).unwrap(), &data);
            #[cfg(feature = "zstd")]
            {
                let coded = zstd::encode_all(&data[..], 3).unwrap();
                prop_assert_eq!(&decode_in_pieces(ContentCoding::Zstd, &coded, &sizes).unwrap(), &data);
            }
        }

        #[test]
        fn any_cut_of_a_stream_is_an_error_never_a_short_body(
            data in body().prop_filter("not empty", |d| !d.is_empty()),
            cut in any::<prop::sample::Index>(),
        ) {
            for coded in [gzip(&data), zlib(&data)] {
                // Cut anywhere but before the first byte: no byte at all is an empty body.
                let cut = 1 + cut.index(coded.len() - 1);
                let coding = if coded[0] == 0x1f { ContentCoding::Gzip } else { ContentCoding::Deflate };
                let result = decode_in_pieces(coding, &coded[..cut], &[7]);
                prop_assert!(result.is_err(), "cut at {} of {} decoded as {:?} bytes", cut, coded.len(), result.map(|d| d.len()));
            }
        }
    }

    #[test]
    fn all_output_comes_out_before_the_body_ends() {
        // Everything a complete stream holds comes out of `decode` alone,
        // before the body's end is known: a stream's last record must not
        // wait for bytes that never come. (The codecs here keep back unread
        // input whenever a piece fills, so a piece that fills exactly as the
        // input runs out is guarded against by `output_may_remain` without
        // a case that shows it.)
        // Noise up to just short of a piece, then a run of zeros: the last
        // match straddles the piece's end after every input byte is read.
        let mut rng = fastrand::Rng::with_seed(7);
        let mut data: Vec<u8> = (0..OUTPUT_PIECE - 10).map(|_| rng.u8(..)).collect();
        data.extend(std::iter::repeat_n(0u8, 1000));
        #[allow(unused_mut)]
        let mut cases = vec![
            (ContentCoding::Gzip, gzip(&data)),
            (ContentCoding::Deflate, zlib(&data)),
            (ContentCoding::Deflate, raw_deflate(&data)),
        ];
        // zstd hands out what it holds across several pieces, too.
        #[cfg(feature = "zstd")]
        cases.push((
            ContentCoding::Zstd,
            zstd::encode_all(&vec![b'z'; 5 * OUTPUT_PIECE][..], 3).unwrap(),
        ));
        for (coding, coded) in cases {
            let data = if coding == ContentCoding::Zstd {
                vec![b'z'; 5 * OUTPUT_PIECE]
            } else {
                data.clone()
            };
            let mut decoder =
                Decoder::new(BodyCoding::Coded(coding), DecodeLimits::default()).unwrap();
            decoder.push(Bytes::from(coded));
            let mut out = Vec::new();
            while decoder.has_pending() {
                if let Some(piece) = decoder.decode().unwrap() {
                    out.extend_from_slice(&piece);
                }
            }
            assert_eq!(out.len(), data.len(), "{coding:?}");
            assert!(decoder.finish().unwrap().is_none());
        }
    }

    #[test]
    fn a_bomb_that_arrived_whole_is_checked_as_it_expands() {
        // 256 MiB of zeros in about 250 KiB, pushed as one piece (as a body
        // gathered before reading arrives): crediting the whole piece at once
        // would allow 250 MB of output.
        let mib = vec![0u8; 1 << 20];
        let mut encoder =
            flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
        encoder.write_all(&mib).unwrap();
        encoder.flush().unwrap();
        let primed = encoder.get_ref().len();
        encoder.write_all(&mib).unwrap();
        encoder.flush().unwrap();
        let segment = encoder.get_ref()[primed..].to_vec();
        let mut bomb = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 2, 255];
        bomb.extend_from_slice(&encoder.get_ref()[..primed]);
        for _ in 1..256 {
            bomb.extend_from_slice(&segment);
        }
        let mut decoder = Decoder::new(
            BodyCoding::Coded(ContentCoding::Gzip),
            DecodeLimits::default(),
        )
        .unwrap();
        decoder.push(Bytes::from(bomb));
        let mut decoded = 0usize;
        let error = loop {
            match decoder.decode() {
                Ok(Some(piece)) => decoded += piece.len(),
                Ok(None) => panic!("the bomb decoded whole: {decoded} bytes"),
                Err(error) => break error,
            }
        };
        assert_eq!(error.kind(), ErrorKind::BodyLimit);
        assert!(decoded < 128 << 20, "{decoded}");
    }

    #[test]
    fn an_empty_coded_body_is_an_empty_body() {
        for coding in [ContentCoding::Gzip, ContentCoding::Deflate] {
            let mut decoder =
                Decoder::new(BodyCoding::Coded(coding), DecodeLimits::default()).unwrap();
            assert!(decoder.finish().unwrap().is_none(), "{coding:?}");
        }
    }

    #[test]
    fn many_tiny_members_decode() {
        let member = gzip(b"");
        let mut body = member.repeat(20_000);
        body.extend_from_slice(&gzip(b"end"));
        let decoded = decode_in_pieces(ContentCoding::Gzip, &body, &[body.len()]).unwrap();
        assert_eq!(decoded, b"end");
    }

    #[cfg(feature = "brotli")]
    #[test]
    fn brotli_bodies_decode_and_a_brotli_bomb_is_stopped() {
        // Made by Python's brotlicffi: a small JSON document, and 64 MiB of
        // zeros in 106 bytes (a ratio of 600,000 to 1).
        let document = include_bytes!("../tests/data/document.json.br");
        let decoded = decode_in_pieces(ContentCoding::Brotli, document, &[3, 50]).unwrap();
        assert!(decoded.starts_with(br#"{"brotli":true"#));
        assert_eq!(decoded.len(), 2115);
        let bomb = include_bytes!("../tests/data/zeros-64mib.br");
        let error = decode_in_pieces(ContentCoding::Brotli, bomb, &[4096]).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::BodyLimit);
    }

    #[test]
    fn the_offer_lists_what_is_compiled_in() {
        let offer = breakwater_core::content::accept_encoding(SUPPORTED);
        assert!(
            offer.contains("gzip") && offer.contains("deflate"),
            "{offer}"
        );
        assert_eq!(offer.contains("br"), cfg!(feature = "brotli"));
        assert_eq!(offer.contains("zstd"), cfg!(feature = "zstd"));
    }
}
