//! Content codings of response bodies (docs/spec/content-coding.md): which
//! ones the client asks for, which one a response uses, the bounds that stop
//! a decompression bomb, and the gzip member framing (RFC 1952) around a
//! deflate stream. Inflating is the client's work, done by a crate; every
//! decision about it is made here.
//!
//! ```
//! use breakwater_core::content::{body_coding, BodyCoding, ContentCoding, DecodeLimits};
//! use http::header::{HeaderMap, HeaderValue, CONTENT_ENCODING};
//!
//! let mut headers = HeaderMap::new();
//! headers.insert(CONTENT_ENCODING, HeaderValue::from_static("GZIP"));
//! let supported = [ContentCoding::Gzip, ContentCoding::Deflate];
//! assert_eq!(body_coding(&headers, &supported), BodyCoding::Coded(ContentCoding::Gzip));
//!
//! // 1 MiB comes free; beyond it, at most 1000 decoded bytes per compressed byte.
//! let limits = DecodeLimits::default();
//! assert!(limits.check(1_000, 1_048_576 + 1_000_000).is_ok());
//! assert!(limits.check(1_000, 1_048_576 + 1_000_001).is_err());
//! ```

use std::fmt;

use http::header::{HeaderMap, CONTENT_ENCODING};

/// A content coding the client can decode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ContentCoding {
    /// `gzip` (RFC 1952 members around deflate), also named `x-gzip`.
    Gzip,
    /// `deflate`: a zlib stream (RFC 1950); a bare deflate stream is accepted too.
    Deflate,
    /// `br`: Brotli (RFC 7932).
    Brotli,
    /// `zstd`: Zstandard (RFC 8878).
    Zstd,
}

impl ContentCoding {
    /// The coding's token in `Accept-Encoding` and `Content-Encoding`.
    pub fn token(self) -> &'static str {
        match self {
            ContentCoding::Gzip => "gzip",
            ContentCoding::Deflate => "deflate",
            ContentCoding::Brotli => "br",
            ContentCoding::Zstd => "zstd",
        }
    }

    /// The coding a token names (ASCII case does not matter).
    pub fn from_token(token: &str) -> Option<ContentCoding> {
        let known = [
            ("gzip", ContentCoding::Gzip),
            ("x-gzip", ContentCoding::Gzip),
            ("deflate", ContentCoding::Deflate),
            ("br", ContentCoding::Brotli),
            ("zstd", ContentCoding::Zstd),
        ];
        known
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(token))
            .map(|&(_, coding)| coding)
    }
}

/// The `Accept-Encoding` value that offers `supported`, in order of preference.
pub fn accept_encoding(supported: &[ContentCoding]) -> String {
    let tokens: Vec<&str> = supported.iter().map(|c| c.token()).collect();
    tokens.join(", ")
}

/// How a response's body is coded, as far as decoding goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyCoding {
    /// Not coded (no `Content-Encoding`, or only `identity`).
    Identity,
    /// One coding the client decodes.
    Coded(ContentCoding),
    /// A coding the client does not decode (unknown, not compiled in, or
    /// more than one applied in turn): the body is delivered as it came,
    /// with its `Content-Encoding`, for the caller to deal with.
    Unsupported,
}

/// How the body with these headers is coded, given the codings the client
/// decodes.
pub fn body_coding(headers: &HeaderMap, supported: &[ContentCoding]) -> BodyCoding {
    let mut found = None;
    for value in headers.get_all(CONTENT_ENCODING) {
        let Ok(text) = value.to_str() else {
            return BodyCoding::Unsupported;
        };
        for token in text.split(',').map(str::trim) {
            if token.is_empty() || token.eq_ignore_ascii_case("identity") {
                continue;
            }
            match (ContentCoding::from_token(token), found) {
                (Some(coding), None) if supported.contains(&coding) => found = Some(coding),
                _ => return BodyCoding::Unsupported,
            }
        }
    }
    found.map_or(BodyCoding::Identity, BodyCoding::Coded)
}

/// How far a coded body may expand: the bounds that stop a decompression bomb.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Decoded bytes allowed per compressed byte, beyond [`ratio_grace`](Self::ratio_grace)
    /// (default 1000: text compresses 5 to 20 times, a bomb a million times).
    pub max_ratio: u64,
    /// Decoded bytes that are allowed whatever the ratio (default 1 MiB):
    /// a small, very repetitive body is no threat.
    pub ratio_grace: u64,
    /// The most decoded bytes of one body, if any (default none: the ratio
    /// is what tells a bomb from a big download).
    pub max_decoded: Option<u64>,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        DecodeLimits {
            max_ratio: 1000,
            ratio_grace: 1024 * 1024,
            max_decoded: None,
        }
    }
}

impl DecodeLimits {
    /// Whether `decoded` bytes out of `compressed` bytes in are within bounds.
    pub fn check(&self, compressed: u64, decoded: u64) -> Result<(), LimitExceeded> {
        if let Some(max) = self.max_decoded {
            if decoded > max {
                return Err(LimitExceeded::Size { max });
            }
        }
        let allowed = self
            .ratio_grace
            .saturating_add(compressed.saturating_mul(self.max_ratio));
        if decoded > allowed {
            return Err(LimitExceeded::Ratio {
                max_ratio: self.max_ratio,
                compressed,
            });
        }
        Ok(())
    }
}

/// A coded body went beyond its [`DecodeLimits`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LimitExceeded {
    /// More decoded bytes than `max_decoded`.
    Size {
        /// The limit.
        max: u64,
    },
    /// More than `max_ratio` decoded bytes per compressed byte.
    Ratio {
        /// The limit.
        max_ratio: u64,
        /// Compressed bytes read when the limit was passed.
        compressed: u64,
    },
}

impl fmt::Display for LimitExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LimitExceeded::Size { max } => {
                write!(f, "the decoded body went over its limit of {max} bytes")
            }
            LimitExceeded::Ratio {
                max_ratio,
                compressed,
            } => write!(
                f,
                "the body expanded more than {max_ratio} times its {compressed} compressed \
                 bytes, as a decompression bomb does"
            ),
        }
    }
}

impl std::error::Error for LimitExceeded {}

/// The longest gzip member header accepted: a file name or extra field
/// longer than this is not a web response's.
pub const MAX_GZIP_HEADER: usize = 64 * 1024;

/// A gzip member's framing is broken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GzipError {
    /// The first bytes are not gzip's magic number and deflate method.
    NotGzip,
    /// Reserved flag bits are set.
    ReservedFlags,
    /// The header is longer than [`MAX_GZIP_HEADER`].
    HeaderTooLong,
    /// The trailer's CRC-32 is not the decoded data's.
    Checksum,
    /// The trailer's length is not the decoded data's (modulo 2^32).
    Length,
}

impl fmt::Display for GzipError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            GzipError::NotGzip => "the body is not gzip data",
            GzipError::ReservedFlags => "the gzip header sets reserved flags",
            GzipError::HeaderTooLong => "the gzip header is implausibly long",
            GzipError::Checksum => "the gzip data fails its checksum",
            GzipError::Length => "the gzip data's length does not match its trailer",
        })
    }
}

impl std::error::Error for GzipError {}

/// The length of the gzip member header at the start of `input`: `Ok(None)`
/// while more bytes are needed to know it (RFC 1952 §2.3). The optional
/// header CRC is skipped, not checked: the trailer's CRC-32 over the data,
/// which is always checked, is what catches corruption.
pub fn gzip_header_len(input: &[u8]) -> Result<Option<usize>, GzipError> {
    const FHCRC: u8 = 0x02;
    const FEXTRA: u8 = 0x04;
    const FNAME: u8 = 0x08;
    const FCOMMENT: u8 = 0x10;
    for (i, want) in [0x1f, 0x8b, 8].into_iter().enumerate() {
        match input.get(i) {
            Some(&byte) if byte != want => return Err(GzipError::NotGzip),
            None => return Ok(None),
            Some(_) => {}
        }
    }
    let Some(&flags) = input.get(3) else {
        return Ok(None);
    };
    if flags & 0xe0 != 0 {
        return Err(GzipError::ReservedFlags);
    }
    // ID1 ID2 CM FLG MTIME(4) XFL OS
    let mut at = 10;
    if flags & FEXTRA != 0 {
        let (Some(&lo), Some(&hi)) = (input.get(at), input.get(at + 1)) else {
            return too_long_or_more(input);
        };
        at += 2 + usize::from(u16::from_le_bytes([lo, hi]));
    }
    for flag in [FNAME, FCOMMENT] {
        if flags & flag != 0 {
            match input
                .get(at..)
                .and_then(|rest| rest.iter().position(|&b| b == 0))
            {
                Some(nul) => at += nul + 1,
                None => return too_long_or_more(input),
            }
        }
    }
    if flags & FHCRC != 0 {
        at += 2;
    }
    if at > MAX_GZIP_HEADER {
        return Err(GzipError::HeaderTooLong);
    }
    Ok((input.len() >= at).then_some(at))
}

fn too_long_or_more(input: &[u8]) -> Result<Option<usize>, GzipError> {
    if input.len() > MAX_GZIP_HEADER {
        Err(GzipError::HeaderTooLong)
    } else {
        Ok(None)
    }
}

/// Checks a gzip member's 8-byte trailer against the CRC-32 and length of
/// the data decoded from it.
pub fn check_gzip_trailer(trailer: [u8; 8], crc: u32, decoded_len: u64) -> Result<(), GzipError> {
    let [c0, c1, c2, c3, l0, l1, l2, l3] = trailer;
    if u32::from_le_bytes([c0, c1, c2, c3]) != crc {
        return Err(GzipError::Checksum);
    }
    // ISIZE is the length modulo 2^32: the truncation is the format's.
    if u32::from_le_bytes([l0, l1, l2, l3]) != decoded_len as u32 {
        return Err(GzipError::Length);
    }
    Ok(())
}

/// Whether the first two bytes of a `deflate` body are a zlib header
/// (RFC 1950 §2.2): method 8 and a header check that divides by 31. Some
/// servers send a bare deflate stream instead, which this tells apart.
pub fn is_zlib_header(first: u8, second: u8) -> bool {
    first & 0x0f == 8 && first >> 4 <= 7 && (u16::from(first) << 8 | u16::from(second)) % 31 == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_and_the_offer_are_exact() {
        let all = [
            ContentCoding::Zstd,
            ContentCoding::Brotli,
            ContentCoding::Gzip,
            ContentCoding::Deflate,
        ];
        assert_eq!(accept_encoding(&all), "zstd, br, gzip, deflate");
        assert_eq!(accept_encoding(&[]), "");
        for coding in all {
            assert_eq!(ContentCoding::from_token(coding.token()), Some(coding));
        }
    }

    #[test]
    fn limits_are_inclusive_and_say_what_was_passed() {
        let sized = DecodeLimits {
            max_decoded: Some(10),
            ..DecodeLimits::default()
        };
        assert_eq!(sized.check(0, 10), Ok(()), "exactly the limit is allowed");
        let size = LimitExceeded::Size { max: 10 }.to_string();
        assert!(size.contains("limit of 10 bytes"), "{size}");
        let ratio = LimitExceeded::Ratio {
            max_ratio: 1000,
            compressed: 7,
        }
        .to_string();
        assert!(
            ratio.contains("1000 times its 7 compressed bytes"),
            "{ratio}"
        );
    }

    #[test]
    fn the_header_cap_is_exact() {
        // FEXTRA of XLEN bytes: the header is 12 + XLEN long.
        let with_extra = |xlen: usize| {
            let mut h = vec![0x1f, 0x8b, 8, 0x04, 0, 0, 0, 0, 0, 3];
            h.extend_from_slice(&(xlen as u16).to_le_bytes());
            h.resize(12 + xlen, b'x');
            h
        };
        let at_cap = with_extra(MAX_GZIP_HEADER - 12);
        assert_eq!(gzip_header_len(&at_cap), Ok(Some(MAX_GZIP_HEADER)));
        let over = with_extra(MAX_GZIP_HEADER - 11);
        assert_eq!(gzip_header_len(&over[..20]), Err(GzipError::HeaderTooLong));
        // A file name of 2000 bytes is within the cap.
        let mut named = vec![0x1f, 0x8b, 8, 0x08, 0, 0, 0, 0, 0, 3];
        named.extend(std::iter::repeat_n(b'n', 2000));
        named.push(0);
        assert_eq!(gzip_header_len(&named), Ok(Some(2011)));
        // An unterminated name: more is needed up to the cap, then it is refused.
        let mut endless = vec![0x1f, 0x8b, 8, 0x08, 0, 0, 0, 0, 0, 3];
        endless.resize(MAX_GZIP_HEADER, b'n');
        assert_eq!(gzip_header_len(&endless), Ok(None));
        endless.push(b'n');
        assert_eq!(gzip_header_len(&endless), Err(GzipError::HeaderTooLong));
    }

    #[test]
    fn trailers_are_checked_field_by_field() {
        let trailer = |crc: u32, len: u32| {
            let mut t = [0u8; 8];
            t[..4].copy_from_slice(&crc.to_le_bytes());
            t[4..].copy_from_slice(&len.to_le_bytes());
            t
        };
        assert_eq!(
            check_gzip_trailer(trailer(0xdead_beef, 5), 0xdead_beef, 5),
            Ok(())
        );
        assert_eq!(
            check_gzip_trailer(trailer(0xdead_beef, 5), 0xdead_beee, 5),
            Err(GzipError::Checksum)
        );
        assert_eq!(
            check_gzip_trailer(trailer(0xdead_beef, 5), 0xdead_beef, 6),
            Err(GzipError::Length)
        );
        // ISIZE is the length modulo 2^32.
        assert_eq!(check_gzip_trailer(trailer(1, 3), 1, (1 << 32) + 3), Ok(()));
        assert!(GzipError::Checksum.to_string().contains("checksum"));
        assert!(GzipError::NotGzip.to_string().contains("not gzip"));
    }

    #[test]
    fn gzip_headers_are_measured_only_when_whole() {
        let plain = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3];
        assert_eq!(gzip_header_len(&plain), Ok(Some(10)));
        for cut in 0..plain.len() {
            assert_eq!(gzip_header_len(&plain[..cut]), Ok(None), "cut at {cut}");
        }
        let mut named = vec![0x1f, 0x8b, 8, 0x08 | 0x02, 0, 0, 0, 0, 0, 3];
        named.extend_from_slice(b"file.json\0");
        named.extend_from_slice(&[0xaa, 0xbb]);
        assert_eq!(gzip_header_len(&named), Ok(Some(named.len())));
        assert_eq!(gzip_header_len(&named[..named.len() - 1]), Ok(None));
        let mut extra = vec![0x1f, 0x8b, 8, 0x04, 0, 0, 0, 0, 0, 3, 3, 0, 1, 2, 3];
        assert_eq!(gzip_header_len(&extra), Ok(Some(15)));
        extra.truncate(13);
        assert_eq!(gzip_header_len(&extra), Ok(None));
        assert_eq!(gzip_header_len(b"{\"a\""), Err(GzipError::NotGzip));
        assert_eq!(
            gzip_header_len(&[0x1f, 0x8b, 8, 0x20, 0, 0, 0, 0, 0, 3]),
            Err(GzipError::ReservedFlags)
        );
        let mut endless = vec![0x1f, 0x8b, 8, 0x08, 0, 0, 0, 0, 0, 3];
        endless.resize(MAX_GZIP_HEADER + 20, b'a');
        assert_eq!(gzip_header_len(&endless), Err(GzipError::HeaderTooLong));
    }

    #[test]
    fn codings_are_found_only_when_there_is_exactly_one_we_decode() {
        use http::HeaderValue;
        let supported = [ContentCoding::Gzip, ContentCoding::Deflate];
        let coding = |values: &[&str]| {
            let mut headers = HeaderMap::new();
            for v in values {
                headers.append(CONTENT_ENCODING, HeaderValue::from_str(v).unwrap());
            }
            body_coding(&headers, &supported)
        };
        assert_eq!(coding(&[]), BodyCoding::Identity);
        assert_eq!(coding(&["identity"]), BodyCoding::Identity);
        assert_eq!(coding(&["x-gzip"]), BodyCoding::Coded(ContentCoding::Gzip));
        assert_eq!(
            coding(&[" Deflate "]),
            BodyCoding::Coded(ContentCoding::Deflate)
        );
        assert_eq!(
            coding(&["gzip, identity"]),
            BodyCoding::Coded(ContentCoding::Gzip)
        );
        assert_eq!(coding(&["br"]), BodyCoding::Unsupported);
        assert_eq!(coding(&["compress"]), BodyCoding::Unsupported);
        assert_eq!(coding(&["gzip", "gzip"]), BodyCoding::Unsupported);
        assert_eq!(coding(&["deflate, gzip"]), BodyCoding::Unsupported);
    }

    #[test]
    fn limits_allow_the_grace_then_the_ratio() {
        let limits = DecodeLimits::default();
        assert!(limits.check(0, 1024 * 1024).is_ok());
        assert!(limits.check(0, 1024 * 1024 + 1).is_err());
        assert!(limits.check(u64::MAX, u64::MAX).is_ok());
        let sized = DecodeLimits {
            max_decoded: Some(10),
            ..limits
        };
        assert_eq!(sized.check(10, 11), Err(LimitExceeded::Size { max: 10 }));
    }

    #[test]
    fn zlib_headers_are_told_from_bare_deflate() {
        assert!(is_zlib_header(0x78, 0x9c));
        assert!(is_zlib_header(0x78, 0x01));
        assert!(is_zlib_header(0x78, 0xda));
        assert!(!is_zlib_header(0xcb, 0x48)); // a bare deflate block
        assert!(!is_zlib_header(0x78, 0x9d));
    }
}
