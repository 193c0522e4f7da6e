//! Any byte stream, cut at a fuzzer-chosen point: the framer must not
//! panic and must make progress (never yield the same empty frame forever).
#![no_main]

use libfuzzer_sys::fuzz_target;
use presence_engine::sip::{Frame, Limits, Message, StreamFramer};

fuzz_target!(|data: &[u8]| {
    let cut = data.first().map_or(0, |b| *b as usize).min(data.len());
    let mut framer = StreamFramer::new(Limits { max_message_size: 4096, ..Limits::default() });
    for chunk in [&data[..cut], &data[cut..]] {
        framer.push(chunk);
        for _ in 0..=data.len() {
            match framer.next_frame() {
                Ok(Some(Frame::Message(raw))) => {
                    let _ = Message::from_raw(raw);
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
    }
});
