//! The public URL's access policy on arbitrary requests: never a panic, never a pass without the
//! credentials or a link this process signed, and burrow's cookie never left for the app.
#![no_main]

use std::time::SystemTime;

use burrow::proxy::access::{without_share_cookie, Access, Asked, Mode, Verdict};
use burrow::proxy::Routes;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // method \n target \n authorization \n cookie
    let mut parts = data.splitn(4, |&b| b == b'\n');
    let (method, target) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
    let (Ok(method), Ok(target)) = (std::str::from_utf8(method), std::str::from_utf8(target)) else { return };
    let authorization = parts.next();
    let cookie = parts.next();
    let routes = Routes::parse("/=http://127.0.0.1:1").expect("the route parses");
    let access = Access::new(Mode::Protected, Some("ann:a password the fuzzer will not guess"), None, 0);
    let asked = Asked { method, target, upgrade: target.len() % 2 == 0, authorization };
    let verdict = access.check(&routes.all()[0], asked, cookie.into_iter(), SystemTime::now());
    assert!(!matches!(verdict, Verdict::Pass { .. } | Verdict::Redirect { .. } | Verdict::ReadOnly), "{verdict:?}");
    if let Some(c) = cookie {
        if let Some(kept) = without_share_cookie(c) {
            let still = kept.split(|&b| b == b';').any(|p| p.trim_ascii().starts_with(b"burrow_share="));
            assert!(!still, "the share cookie was left in {kept:?}");
        }
    }
});
