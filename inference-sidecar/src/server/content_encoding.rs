//! Request bodies sent compressed (`Content-Encoding: gzip` or `deflate`, as Triton's and KServe's
//! HTTP clients can send them): decoded before any route reads them, within the same payload limit
//! as a plain body, so a small body that inflates past it (a decompression bomb) is refused with
//! 413 after reading no more than the limit and one byte.

use std::io::Read;

use axum::body::Bytes;
use axum::http::{HeaderMap, header};

use super::fast_path::BodyRead;

/// The content codings this server decodes, as `Content-Encoding` names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Coding {
    Identity,
    Gzip,
    /// HTTP's `deflate`: zlib-wrapped (RFC 9110, 8.4.1.2).
    Deflate,
}

impl Coding {
    fn parse(name: &str) -> Option<Self> {
        match name.trim().to_ascii_lowercase().as_str() {
            "" | "identity" => Some(Coding::Identity),
            "gzip" | "x-gzip" => Some(Coding::Gzip),
            "deflate" => Some(Coding::Deflate),
            _ => None,
        }
    }
}

/// The body as the route reads it: decoded per `Content-Encoding` (codings applied in order, so
/// undone in reverse), at most `limit` bytes after each step. A coding this server does not know
/// is refused (415 names it); a body that does not decode is a malformed request (400).
pub(super) fn decode(headers: &HeaderMap, body: Bytes, limit: usize) -> BodyRead {
    let Some(value) = headers.get(header::CONTENT_ENCODING) else { return BodyRead::Whole(body) };
    let Ok(value) = value.to_str() else {
        return BodyRead::UnsupportedEncoding("a Content-Encoding that is not ASCII".into());
    };
    let mut codings = Vec::new();
    for name in value.split(',') {
        match Coding::parse(name) {
            Some(Coding::Identity) => {}
            Some(c) => codings.push(c),
            None => return BodyRead::UnsupportedEncoding(crate::error::echo(name.trim())),
        }
    }
    let mut body = body;
    for coding in codings.into_iter().rev() {
        let read = match coding {
            Coding::Gzip => inflate(flate2::read::MultiGzDecoder::new(&body[..]), limit),
            Coding::Deflate => inflate(flate2::read::ZlibDecoder::new(&body[..]), limit),
            Coding::Identity => unreachable!("identity is skipped"),
        };
        body = match read {
            BodyRead::Whole(b) => b,
            refused => return refused,
        };
    }
    BodyRead::Whole(body)
}

/// Reads a decoder to its end, at most `limit` bytes.
fn inflate(decoder: impl Read, limit: usize) -> BodyRead {
    let mut out = Vec::new();
    match decoder.take(limit as u64 + 1).read_to_end(&mut out) {
        Ok(n) if n > limit => BodyRead::TooLarge { drained: true },
        Ok(_) => BodyRead::Whole(Bytes::from(out)),
        Err(e) => BodyRead::Broken(format!("the compressed body does not decode: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use axum::http::HeaderValue;

    use super::*;

    fn gzip(data: &[u8]) -> Bytes {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(data).unwrap();
        Bytes::from(enc.finish().unwrap())
    }

    fn with(encoding: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_ENCODING, HeaderValue::from_str(encoding).unwrap());
        h
    }

    fn whole(r: BodyRead) -> Bytes {
        match r {
            BodyRead::Whole(b) => b,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn gzip_and_deflate_decode_and_identity_passes() {
        let json = br#"{"inputs": []}"#;
        assert_eq!(whole(decode(&with("gzip"), gzip(json), 1024)), &json[..]);
        assert_eq!(whole(decode(&with("GZIP"), gzip(json), 1024)), &json[..]);
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(json).unwrap();
        assert_eq!(whole(decode(&with("deflate"), Bytes::from(z.finish().unwrap()), 1024)), &json[..]);
        assert_eq!(whole(decode(&with("identity"), Bytes::from_static(json), 1024)), &json[..]);
        assert_eq!(whole(decode(&HeaderMap::new(), Bytes::from_static(json), 1024)), &json[..]);
        // Applied in order, undone in reverse.
        assert_eq!(whole(decode(&with("gzip, gzip"), gzip(&gzip(json)), 1024)), &json[..]);
    }

    #[test]
    fn a_bomb_is_refused_at_the_limit_and_garbage_and_unknown_codings_are_named() {
        let bomb = gzip(&vec![b' '; 10 << 20]);
        assert!(bomb.len() < 64 << 10, "{}", bomb.len());
        assert!(matches!(decode(&with("gzip"), bomb, 1 << 20), BodyRead::TooLarge { drained: true }));
        assert!(matches!(decode(&with("gzip"), Bytes::from_static(b"not gzip"), 1024), BodyRead::Broken(_)));
        match decode(&with("br"), Bytes::from_static(b"x"), 1024) {
            BodyRead::UnsupportedEncoding(name) => assert_eq!(name, "br"),
            other => panic!("{other:?}"),
        }
    }
}
