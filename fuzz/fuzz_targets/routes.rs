//! The route table and path policy against a reference: any path the proxy accepts reaches the
//! route its fully decoded, dot-resolved, slash-merged form selects by segment-aligned longest
//! prefix — so no encoding trick reaches another upstream.
#![no_main]

use burrow::proxy::routes::Routes;
use libfuzzer_sys::fuzz_target;

const DEFAULT: &str = "/api/alt=http://127.0.0.1:5003,/api=http://127.0.0.1:8000,/=http://127.0.0.1:5002";

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// Segments of the path with %XX of unreserved characters decoded; `None` when the path has an
/// encoded separator or NUL (%2F, %5C, %00) or a raw backslash or NUL, which the proxy must refuse.
fn reference_segments(path: &str) -> Option<Vec<Vec<u8>>> {
    let raw = path.as_bytes();
    if raw.contains(&b'\\') || raw.contains(&0) {
        return None;
    }
    let mut segs = Vec::new();
    for seg in raw.split(|&b| b == b'/') {
        let mut out = Vec::new();
        let mut i = 0;
        while i < seg.len() {
            if seg[i] == b'%' && i + 2 < seg.len() {
                if let (Some(h), Some(l)) = (hex(seg[i + 1]), hex(seg[i + 2])) {
                    let b = h * 16 + l;
                    if b == b'/' || b == b'\\' || b == 0 {
                        return None;
                    }
                    // RFC 3986 §6.2.2.2: only unreserved characters are the same encoded or
                    // not; `%21` and `!` are different paths, and both sides must agree so.
                    if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                }
            }
            out.push(seg[i]);
            i += 1;
        }
        segs.push(out);
    }
    Some(segs)
}

fn matches(prefix: &str, segs: &[&[u8]]) -> bool {
    let p: Vec<&[u8]> = prefix.as_bytes().split(|&b| b == b'/').filter(|s| !s.is_empty()).collect();
    p.len() <= segs.len() && p.iter().zip(segs).all(|(a, b)| a == b)
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (spec, path) = match text.split_once('\n') {
        Some((s, p)) if s.starts_with('/') => (s, p),
        _ => (DEFAULT, text),
    };
    let Ok(routes) = Routes::parse(spec) else { return };
    // What the proxy sees: the path part of the request target.
    let path = path.split(['?', '#']).next().unwrap_or("");
    if !path.starts_with('/') {
        return;
    }
    let Ok(chosen) = routes.select(path) else { return };
    let segs =
        reference_segments(path).expect("the proxy accepted a path with an encoded separator, a backslash or NUL");
    let segs: Vec<&[u8]> = segs.iter().map(Vec::as_slice).filter(|s| !s.is_empty()).collect();
    assert!(!segs.iter().any(|s| *s == b"." || *s == b".."), "the proxy accepted a path with a dot-segment: {path:?}");
    let expected = routes.all().iter().find(|r| matches(&r.prefix, &segs));
    assert_eq!(chosen.map(|r| &r.prefix), expected.map(|r| &r.prefix), "path {path:?}");
});
