//! The form's wire format, escaping and boundary, and a round trip through a strict parser.

use super::*;
use futures_lite::StreamExt;
use proptest::prelude::*;

/// A part as the strict parser below reads it back.
#[derive(Debug, PartialEq, Eq)]
struct Parsed {
    name: String,
    file_name: Option<String>,
    content_type: Option<String>,
    body: Vec<u8>,
}

/// Reads a body exactly as [`Form`] writes it and fails on anything
/// else: no preamble, no epilogue, CRLF everywhere, only the two
/// headers, quoted names free of `"`, CR and LF.
fn parse(boundary: &str, body: &[u8]) -> Result<Vec<Parsed>, String> {
    let delimiter = format!("--{boundary}");
    let mut rest = body
        .strip_prefix(delimiter.as_bytes())
        .ok_or("the body does not open with the delimiter")?;
    let mut parts = Vec::new();
    loop {
        if rest == b"--\r\n" {
            return Ok(parts);
        }
        rest = rest
            .strip_prefix(b"\r\n")
            .ok_or("no CRLF after a delimiter")?;
        let head_end = find(rest, b"\r\n\r\n").ok_or("a head without its blank line")?;
        let head = std::str::from_utf8(&rest[..head_end]).map_err(|e| e.to_string())?;
        rest = &rest[head_end + 4..];
        let mut disposition = None;
        let mut content_type = None;
        for line in head.split("\r\n") {
            if let Some(value) = line.strip_prefix("Content-Disposition: ") {
                if disposition.replace(value).is_some() {
                    return Err("two Content-Disposition lines".into());
                }
            } else if let Some(value) = line.strip_prefix("Content-Type: ") {
                if content_type.replace(value.to_owned()).is_some() {
                    return Err("two Content-Type lines".into());
                }
            } else {
                return Err(format!("unexpected head line {line:?}"));
            }
        }
        let disposition = disposition.ok_or("no Content-Disposition")?;
        let (name, file_name) = parse_disposition(disposition)?;
        let end = find(rest, format!("\r\n{delimiter}").as_bytes())
            .ok_or("a part without a delimiter after it")?;
        parts.push(Parsed {
            name,
            file_name,
            content_type,
            body: rest[..end].to_vec(),
        });
        rest = &rest[end + 2 + delimiter.len()..];
    }
}

fn parse_disposition(value: &str) -> Result<(String, Option<String>), String> {
    let rest = value
        .strip_prefix("form-data; name=\"")
        .ok_or_else(|| format!("not form-data with a name first: {value:?}"))?;
    let (name, rest) = rest.split_once('"').ok_or("an unclosed name")?;
    let file_name = match rest {
        "" => None,
        _ => {
            let quoted = rest
                .strip_prefix("; filename=\"")
                .and_then(|r| r.strip_suffix('"'))
                .ok_or_else(|| format!("unexpected parameters {rest:?}"))?;
            Some(unescape(quoted)?)
        }
    };
    Ok((unescape(name)?, file_name))
}

fn unescape(quoted: &str) -> Result<String, String> {
    if quoted.contains(['"', '\r', '\n']) {
        return Err(format!("an unescaped quote, CR or LF in {quoted:?}"));
    }
    Ok(quoted
        .replace("%22", "\"")
        .replace("%0D", "\r")
        .replace("%0A", "\n"))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn buffered(form: Form) -> Bytes {
    match form.into_body().unwrap() {
        FormBody::Buffered(bytes) => bytes,
        FormBody::Streamed(_) => panic!("an in-memory form was streamed"),
    }
}

fn collect(stream: FormStream) -> io::Result<Vec<u8>> {
    futures_lite::future::block_on(async {
        let mut stream = stream;
        let mut body = Vec::new();
        while let Some(piece) = stream.next().await {
            body.extend_from_slice(&piece?);
        }
        Ok(body)
    })
}

fn streamed(form: Form) -> FormStream {
    match form.into_body().unwrap() {
        FormBody::Streamed(stream) => stream,
        FormBody::Buffered(_) => panic!("a form with a streamed part was buffered"),
    }
}

fn pieces(pieces: &[&'static [u8]]) -> impl futures_lite::Stream<Item = io::Result<Bytes>> {
    let pieces: Vec<_> = pieces.iter().map(|p| Ok(Bytes::from_static(p))).collect();
    futures_lite::stream::iter(pieces)
}

#[test]
fn a_small_form_has_exactly_these_bytes() {
    let form = Form::with_boundary("B0undary".into())
        .text("title", "Hi")
        .part("doc", Part::bytes(&b"\x00\x01"[..]).file_name("a.bin"))
        .part("notes", Part::text("n").file_name("n.txt"))
        .part("meta", Part::text("{}").content_type("application/json"));
    let expected = "--B0undary\r\n\
         Content-Disposition: form-data; name=\"title\"\r\n\
         \r\n\
         Hi\r\n\
         --B0undary\r\n\
         Content-Disposition: form-data; name=\"doc\"; filename=\"a.bin\"\r\n\
         Content-Type: application/octet-stream\r\n\
         \r\n\
         \x00\x01\r\n\
         --B0undary\r\n\
         Content-Disposition: form-data; name=\"notes\"; filename=\"n.txt\"\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\
         \r\n\
         n\r\n\
         --B0undary\r\n\
         Content-Disposition: form-data; name=\"meta\"\r\n\
         Content-Type: application/json\r\n\
         \r\n\
         {}\r\n\
         --B0undary--\r\n";
    assert_eq!(
        form.content_type(),
        "multipart/form-data; boundary=B0undary"
    );
    assert_eq!(form.content_length(), Some(expected.len() as u64));
    assert_eq!(&buffered(form)[..], expected.as_bytes());
}

#[test]
fn an_empty_form_is_only_the_closing_delimiter() {
    let form = Form::with_boundary("b".into());
    assert_eq!(form.content_length(), Some(7));
    assert_eq!(&buffered(form)[..], b"--b--\r\n");
}

#[test]
fn a_new_boundary_is_long_random_and_recognisable() {
    let (a, b) = (Form::new(), Form::default());
    for boundary in [a.boundary(), b.boundary()] {
        let random = boundary.strip_prefix("breakwater-").unwrap();
        assert_eq!(random.len(), 32);
        assert!(
            random.bytes().all(|c| c.is_ascii_alphanumeric()),
            "{boundary}"
        );
    }
    assert_ne!(a.boundary(), b.boundary());
}

#[test]
fn names_and_file_names_are_escaped_as_browsers_escape_them() {
    let form = Form::with_boundary("b".into()).part(
        "say \"hi\"\r\nX-Injected: 1",
        Part::bytes("x").file_name("résumé \"final\"\n.pdf"),
    );
    let body = buffered(form);
    let text = std::str::from_utf8(&body).unwrap();
    assert!(
        text.contains(
            "Content-Disposition: form-data; \
             name=\"say %22hi%22%0D%0AX-Injected: 1\"; \
             filename=\"résumé %22final%22%0A.pdf\"\r\n"
        ),
        "{text:?}"
    );
    // Non-ASCII goes out as its raw UTF-8, not percent-encoded.
    assert!(body.windows(2).any(|w| w == "é".as_bytes()));
    let parts = parse("b", &body).unwrap();
    assert_eq!(parts[0].name, "say \"hi\"\r\nX-Injected: 1");
    assert_eq!(
        parts[0].file_name.as_deref(),
        Some("résumé \"final\"\n.pdf")
    );
}

#[test]
fn a_part_holding_the_boundary_gets_a_new_one() {
    let form = Form::new().text("first", "plain");
    let old = form.boundary().to_owned();
    let trap =
        format!("before\r\n--{old}\r\nContent-Disposition: form-data; name=\"evil\"\r\n\r\n");
    let form = form.bytes("trap", trap.clone());
    let new = form.boundary().to_owned();
    assert_ne!(new, old, "the boundary was kept though a part holds it");
    assert!(new.starts_with("breakwater-") && new.len() == old.len());
    let body = buffered(form);
    let parts = parse(&new, &body).unwrap();
    let names: Vec<_> = parts.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["first", "trap"]);
    assert_eq!(parts[1].body, trap.as_bytes());

    // Text parts are checked too, and so is a form that also streams.
    let form = Form::new().part("s", Part::stream(pieces(&[b"x"]), None));
    let old = form.boundary().to_owned();
    let form = form.text("t", format!("--{old}"));
    assert_ne!(form.boundary(), old);
}

#[test]
fn a_form_in_memory_is_one_buffer_and_a_streamed_one_a_stream() {
    let in_memory = || {
        Form::with_boundary("b".into())
            .text("a", "1")
            .part("f", Part::bytes(&b"hello world"[..]).file_name("f.txt"))
            .text("z", "2")
    };
    let expected = buffered(in_memory());
    assert!(matches!(in_memory().into_body(), Ok(FormBody::Buffered(_))));

    // The same form with the file streamed: the same bytes, as a stream.
    let with_stream = |length| {
        Form::with_boundary("b".into())
            .text("a", "1")
            .part(
                "f",
                Part::stream(pieces(&[b"hello", b"", b" world"]), length).file_name("f.txt"),
            )
            .text("z", "2")
    };
    assert_eq!(
        with_stream(Some(11)).content_length(),
        Some(expected.len() as u64)
    );
    assert_eq!(with_stream(None).content_length(), None);
    assert_eq!(collect(streamed(with_stream(Some(11)))).unwrap(), expected);
    assert_eq!(collect(streamed(with_stream(None))).unwrap(), expected);
}

#[test]
fn a_large_part_in_a_streamed_form_is_sent_without_a_copy() {
    let big = Bytes::from(vec![7u8; INLINE_PART_BYTES + 1]);
    let form = Form::with_boundary("b".into())
        .bytes("big", big.clone())
        .part("s", Part::stream(pieces(&[b"tail"]), Some(4)));
    let mut stream = streamed(form);
    let pieces: Vec<Bytes> = futures_lite::future::block_on(async {
        let mut out = Vec::new();
        while let Some(piece) = stream.next().await {
            out.push(piece.unwrap());
        }
        out
    });
    assert!(pieces
        .iter()
        .any(|p| p.as_ptr() == big.as_ptr() && p.len() == big.len()));
    let body: Vec<u8> = pieces.concat();
    let parts = parse("b", &body).unwrap();
    assert_eq!(parts[0].body, big);
    assert_eq!(parts[1].body, b"tail");
}

#[test]
fn a_stream_that_breaks_its_declared_length_fails_the_body() {
    for (declared, how) in [(3, "more than"), (20, "fewer than")] {
        let form = Form::new()
            .part(
                "upload",
                Part::stream(pieces(&[b"hello", b" world"]), Some(declared)),
            )
            .text("after", "never sent");
        let mut stream = streamed(form);
        let mut sent = Vec::new();
        let error = futures_lite::future::block_on(async {
            loop {
                match stream.next().await {
                    Some(Ok(piece)) => sent.extend_from_slice(&piece),
                    Some(Err(error)) => break error,
                    None => panic!("a stream of the wrong length ended cleanly"),
                }
            }
        });
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
        let message = error.to_string();
        assert!(
            message.contains(how) && message.contains("\"upload\""),
            "{message}"
        );
        // Nothing follows the failure: not the next part, not the closing delimiter.
        assert!(futures_lite::future::block_on(stream.next()).is_none());
        assert!(!sent.windows(10).any(|w| w == b"never sent"));
    }
}

#[test]
fn a_stream_s_own_error_ends_the_body() {
    let failing = futures_lite::stream::iter([
        Ok(Bytes::from_static(b"part")),
        Err(io::Error::other("disk gone")),
    ]);
    let form = Form::new().part("f", Part::stream(failing, None));
    let error = collect(streamed(form)).unwrap_err();
    assert_eq!(error.to_string(), "disk gone");
}

#[test]
fn an_invalid_content_type_is_an_error_naming_its_field() {
    for bad in [
        "",
        "png",
        "image/",
        "/png",
        "image png",
        "text/plain\r\nX-Injected: 1",
        "text/plain; charset",
        "text/plain; charset=\"utf-8",
        "text/plain; charset=ü",
        "text/plain, text/html",
    ] {
        let form = Form::new()
            .text("ok", "1")
            .part("pic", Part::bytes("x").content_type(bad));
        assert_eq!(form.content_length(), None, "{bad:?}");
        let error = form.into_body().unwrap_err();
        assert_eq!((error.field(), error.value()), ("pic", bad));
        assert!(error.to_string().contains("\"pic\""), "{error}");
    }
    for good in [
        "image/png",
        "text/plain; charset=utf-8",
        "text/plain;charset=UTF-8",
        "application/vnd.api+json",
        "text/plain; format=\"flowed \\\"x\\\"\"",
        "text/plain; ; a=b ;",
    ] {
        let form = Form::new().part("pic", Part::bytes("x").content_type(good));
        assert!(form.into_body().is_ok(), "{good:?}");
    }
}

/// Field names without `%` (which the browsers' escaping leaves
/// ambiguous) and arbitrary bytes, some of them holding the boundary.
fn fields() -> impl Strategy<Value = Vec<(String, Option<String>, Vec<u8>, bool)>> {
    prop::collection::vec(
        (
            "[^%]{0,12}",
            prop::option::of("[^%]{0,12}"),
            prop::collection::vec(any::<u8>(), 0..200),
            any::<bool>(),
        ),
        0..6,
    )
}

proptest! {
    #[test]
    fn any_form_of_bytes_parses_back_to_its_parts(fields in fields()) {
        let mut form = Form::new();
        let mut expected = Vec::new();
        for (name, file_name, mut bytes, plant_boundary) in fields {
            if plant_boundary {
                // The boundary the form has now: adding this part must change it.
                let at = bytes.len() / 2;
                let planted = format!("\r\n--{}", form.boundary());
                bytes.splice(at..at, planted.into_bytes());
            }
            let mut part = Part::bytes(bytes.clone());
            if let Some(file_name) = &file_name {
                part = part.file_name(file_name.clone());
            }
            form = form.part(name.clone(), part);
            let content_type = file_name.is_some().then(|| "application/octet-stream".to_owned());
            expected.push(Parsed { name, file_name, content_type, body: bytes });
        }
        let boundary = form.boundary().to_owned();
        let length = form.content_length();
        let body = buffered(form);
        prop_assert_eq!(length, Some(body.len() as u64));
        prop_assert_eq!(parse(&boundary, &body), Ok(expected));
    }
}
