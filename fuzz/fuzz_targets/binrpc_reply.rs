//! A ctl peer's reply: whole messages, and bodies on their own.
#![no_main]

use dsfeed_binrpc::{Message, decode_body};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(message) = Message::decode(data) {
        // What decodes encodes again, and back to the same values.
        let again = message.encode().expect("a decoded message encodes");
        assert_eq!(Message::decode(&again).expect("re-decodes"), message);
    }
    let _ = decode_body(data);
});
