//! Reading a `multipart/form-data` body (RFC 7578) that a route received,
//! to assert on its parts.
//!
//! ```
//! use breakwater_testkit::multipart;
//!
//! let body = b"--XyZ\r\n\
//!     Content-Disposition: form-data; name=\"title\"\r\n\
//!     \r\n\
//!     Hello\r\n\
//!     --XyZ\r\n\
//!     Content-Disposition: form-data; name=\"file\"; filename=\"a %22b%22.txt\"\r\n\
//!     Content-Type: text/plain\r\n\
//!     \r\n\
//!     contents\r\n\
//!     --XyZ--\r\n";
//! let parts = multipart::parse("multipart/form-data; boundary=XyZ", body).unwrap();
//! assert_eq!(parts[0].name, "title");
//! assert_eq!(parts[0].text(), Some("Hello"));
//! assert_eq!(parts[1].file_name.as_deref(), Some("a \"b\".txt"));
//! assert_eq!(parts[1].content_type.as_deref(), Some("text/plain"));
//! assert_eq!(&parts[1].body[..], b"contents");
//! ```
//!
//! With a recorded [`Request`](crate::Request):
//! `multipart::parse(request.headers.get("content-type").unwrap(), &request.body)`.

use bytes::Bytes;

/// One part of a received `multipart/form-data` body.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReceivedPart {
    /// The field name, with the `%22`, `%0D` and `%0A` escapes of the
    /// WHATWG encoding (what browsers and Breakwater send) decoded.
    pub name: String,
    /// The `filename` parameter, decoded like the name.
    pub file_name: Option<String>,
    /// The part's `Content-Type`, as sent.
    pub content_type: Option<String>,
    /// The part's bytes.
    pub body: Bytes,
}

impl ReceivedPart {
    /// The body as text, if it is UTF-8.
    pub fn text(&self) -> Option<&str> {
        std::str::from_utf8(&self.body).ok()
    }
}

/// The parts of `body`, sent with the `Content-Type` `content_type` (a
/// `&str` or a `&HeaderValue`).
///
/// The framing is read as RFC 2046 defines it: a preamble before the first
/// delimiter and an epilogue after the last are ignored, as are spaces and
/// tabs after a delimiter. Each part must have a `Content-Disposition` of
/// type `form-data` with a `name`; its other headers but `Content-Type` are
/// ignored. Quoted parameter values end at the first `"` and keep
/// backslashes, as browsers write them.
///
/// # Errors
/// A message saying what is wrong: the content type is not
/// `multipart/form-data` with a boundary, a part's head is malformed or
/// not UTF-8, or the closing delimiter is missing.
pub fn parse(content_type: impl AsRef<[u8]>, body: &[u8]) -> Result<Vec<ReceivedPart>, String> {
    let content_type = std::str::from_utf8(content_type.as_ref())
        .map_err(|_| "the content type is not UTF-8".to_owned())?;
    let boundary = boundary_of(content_type)?;
    let delimiter = format!("--{boundary}");
    let delimiter = delimiter.as_bytes();
    // The first delimiter opens the body or a line.
    let mut rest = if body.starts_with(delimiter) {
        &body[delimiter.len()..]
    } else {
        let mut line_start = Vec::with_capacity(delimiter.len() + 2);
        line_start.extend_from_slice(b"\r\n");
        line_start.extend_from_slice(delimiter);
        let at = find(body, &line_start).ok_or("no delimiter in the body")?;
        &body[at + line_start.len()..]
    };
    let mut separator = Vec::with_capacity(delimiter.len() + 2);
    separator.extend_from_slice(b"\r\n");
    separator.extend_from_slice(delimiter);
    let mut parts = Vec::new();
    loop {
        if rest.starts_with(b"--") {
            return Ok(parts);
        }
        let padding = rest
            .iter()
            .take_while(|&&b| b == b' ' || b == b'\t')
            .count();
        rest = rest[padding..]
            .strip_prefix(b"\r\n")
            .ok_or_else(|| format!("part {}: the delimiter's line goes on", parts.len()))?;
        let index = parts.len();
        let head_end = if rest.starts_with(b"\r\n") {
            // A part with no header at all (then it has no name: an error below).
            0
        } else {
            find(rest, b"\r\n\r\n")
                .map(|at| at + 2)
                .ok_or_else(|| format!("part {index}: the head does not end"))?
        };
        let head = std::str::from_utf8(&rest[..head_end])
            .map_err(|_| format!("part {index}: the head is not UTF-8"))?;
        let (name, file_name, content_type) =
            read_head(head).map_err(|e| format!("part {index}: {e}"))?;
        rest = &rest[head_end + 2..];
        let end = find(rest, &separator).ok_or_else(|| {
            format!("part {index}: no delimiter after it (the body is cut short)")
        })?;
        parts.push(ReceivedPart {
            name,
            file_name,
            content_type,
            body: Bytes::copy_from_slice(&rest[..end]),
        });
        rest = &rest[end + separator.len()..];
    }
}

/// The `boundary` parameter of a `multipart/form-data` content type.
fn boundary_of(content_type: &str) -> Result<String, String> {
    let mut pieces = content_type.splitn(2, ';');
    let essence = pieces.next().unwrap_or("").trim();
    if !essence.eq_ignore_ascii_case("multipart/form-data") {
        return Err(format!(
            "the content type {content_type:?} is not multipart/form-data"
        ));
    }
    let params = parameters(pieces.next().unwrap_or(""))?;
    let boundary = params
        .into_iter()
        .find(|(name, _)| name.eq_ignore_ascii_case("boundary"))
        .map(|(_, value)| value)
        .ok_or_else(|| format!("the content type {content_type:?} has no boundary"))?;
    if boundary.is_empty() || boundary.len() > 70 {
        return Err(format!(
            "the boundary {boundary:?} is not 1 to 70 characters"
        ));
    }
    Ok(boundary)
}

/// A part's head: its name, file name and content type.
fn read_head(head: &str) -> Result<(String, Option<String>, Option<String>), String> {
    let mut disposition = None;
    let mut content_type = None;
    for line in head.split_terminator("\r\n") {
        if line.starts_with([' ', '\t']) {
            return Err(format!("a folded header line {line:?}"));
        }
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| format!("a header line without a colon {line:?}"))?;
        let slot = if name.eq_ignore_ascii_case("content-disposition") {
            &mut disposition
        } else if name.eq_ignore_ascii_case("content-type") {
            &mut content_type
        } else {
            continue;
        };
        if slot.replace(value.trim_matches([' ', '\t'])).is_some() {
            return Err(format!("two {name} headers"));
        }
    }
    let disposition = disposition.ok_or("no Content-Disposition")?;
    let (kind, params) = disposition.split_once(';').unwrap_or((disposition, ""));
    if !kind.trim().eq_ignore_ascii_case("form-data") {
        return Err(format!("the disposition {disposition:?} is not form-data"));
    }
    let params = parameters(params)?;
    let param = |wanted: &str| {
        params
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(wanted))
            .map(|(_, value)| unescape(value))
    };
    let name =
        param("name").ok_or_else(|| format!("the disposition {disposition:?} has no name"))?;
    Ok((name, param("filename"), content_type.map(str::to_owned)))
}

/// `; name=value` parameters, values as tokens or quoted strings (ending
/// at the first `"`, backslashes kept).
fn parameters(mut text: &str) -> Result<Vec<(String, String)>, String> {
    let mut params = Vec::new();
    loop {
        text = text.trim_start_matches([' ', '\t', ';']);
        if text.is_empty() {
            return Ok(params);
        }
        let (name, after) = text
            .split_once('=')
            .ok_or_else(|| format!("a parameter without a value in {text:?}"))?;
        let name = name.trim_matches([' ', '\t']);
        if name.is_empty() || name.contains([' ', '\t', ';', '"']) {
            return Err(format!("a malformed parameter name {name:?}"));
        }
        let (value, after) = if let Some(quoted) = after.strip_prefix('"') {
            let (value, after) = quoted
                .split_once('"')
                .ok_or_else(|| format!("an unclosed quoted value for {name:?}"))?;
            (value, after)
        } else {
            let end = after.find(';').unwrap_or(after.len());
            (after[..end].trim_end_matches([' ', '\t']), &after[end..])
        };
        let after = after.trim_start_matches([' ', '\t']);
        if !(after.is_empty() || after.starts_with(';')) {
            return Err(format!("text after the value of {name:?}: {after:?}"));
        }
        params.push((name.to_owned(), value.to_owned()));
        text = after;
    }
}

/// The WHATWG escapes of a name undone.
fn unescape(value: &str) -> String {
    value
        .replace("%22", "\"")
        .replace("%0D", "\r")
        .replace("%0A", "\n")
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_body_as_rfc_2046_frames_it() {
        // A quoted boundary, a preamble, padding after a delimiter, header
        // names in any case, a header it ignores, an epilogue.
        let body = b"preamble\r\n--a b\r\n\
            content-disposition: FORM-DATA; filename=\"C:\\tmp\\x.txt\"; name=field\r\n\
            X-Other: 1\r\n\
            CONTENT-TYPE: text/plain\r\n\
            \r\n\
            line one\r\nline two\r\n\
            --a b  \r\n\
            Content-Disposition: form-data; name=\"\"\r\n\
            \r\n\
            \r\n\
            --a b--\r\nepilogue";
        let parts = parse("Multipart/Form-Data; charset=utf-8; Boundary=\"a b\"", body).unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].name, "field");
        assert_eq!(parts[0].file_name.as_deref(), Some("C:\\tmp\\x.txt"));
        assert_eq!(parts[0].content_type.as_deref(), Some("text/plain"));
        assert_eq!(parts[0].text(), Some("line one\r\nline two"));
        assert_eq!(parts[1].name, "");
        assert_eq!(parts[1].body, Bytes::new());
    }

    #[test]
    fn an_empty_form_has_no_parts() {
        assert_eq!(
            parse("multipart/form-data; boundary=b", b"--b--\r\n"),
            Ok(vec![])
        );
    }

    #[test]
    fn says_what_is_wrong() {
        let cases: [(&str, &[u8], &str); 7] = [
            ("text/plain", b"--b--", "not multipart/form-data"),
            ("multipart/form-data", b"--b--", "no boundary"),
            (
                "multipart/form-data; boundary=b",
                b"nothing",
                "no delimiter",
            ),
            (
                "multipart/form-data; boundary=b",
                b"--b\r\nContent-Disposition: form-data; name=\"x\"\r\n\r\ncut",
                "part 0: no delimiter after it",
            ),
            (
                "multipart/form-data; boundary=b",
                b"--b\r\nContent-Disposition: attachment; name=\"x\"\r\n\r\n\r\n--b--",
                "part 0: the disposition",
            ),
            (
                "multipart/form-data; boundary=b",
                b"--b\r\nContent-Type: text/plain\r\n\r\n\r\n--b--",
                "part 0: no Content-Disposition",
            ),
            (
                "multipart/form-data; boundary=b",
                b"--b\r\nContent-Disposition: form-data; filename=\"f\"\r\n\r\n\r\n--b--",
                "has no name",
            ),
        ];
        for (content_type, body, expected) in cases {
            let error = parse(content_type, body).unwrap_err();
            assert!(
                error.contains(expected),
                "{error:?} does not say {expected:?}"
            );
        }
    }
}
