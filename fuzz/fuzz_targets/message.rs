//! Message parsing on any body under any type byte: never panics; what parses re-encodes to the
//! same message.
#![no_main]

use burrow_proto::frame::{Frame, MsgType};
use burrow_proto::Message;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&ty, body)) = data.split_first() else { return };
    let Some(ty) = MsgType::from_byte(ty) else { return };
    let frame = Frame { ty, body: body.to_vec() };
    if let Ok(m) = Message::parse(&frame) {
        assert_eq!(m.msg_type(), ty);
        let Ok(bytes) = m.to_bytes() else { return };
        let (back, _) = Message::decode(&bytes).expect("re-encoded message parses").expect("whole frame");
        assert_eq!(back, m);
    }
});
