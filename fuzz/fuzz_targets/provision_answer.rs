//! The provisioning API's answer: any bytes give a reservation or an error naming the problem,
//! never a panic, and an error never repeats the server token.
#![no_main]

use burrow::provision::parse_reservation;
use libfuzzer_sys::fuzz_target;

const MARKER: &str = "Zq8sekrit7Wx";

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = parse_reservation(data) {
        let _ = burrow::provision::renew_at(&r);
    }
    // The same answer with the token marked: whatever else is wrong, the token is not repeated.
    let Ok(mut v) = serde_json::from_slice::<serde_json::Value>(data) else { return };
    let Some(t) = v.pointer_mut("/server/token") else { return };
    let marked = match &*t {
        serde_json::Value::String(s) => format!("{s}{MARKER}"),
        other => format!("{other}{MARKER}"),
    };
    *t = marked.into();
    let marked = serde_json::to_vec(&v).expect("a Value serialises");
    if let Err(e) = parse_reservation(&marked) {
        let shown = format!("{e} {e:?}");
        assert!(!shown.contains(MARKER), "server token in the error: {shown}");
    }
});
