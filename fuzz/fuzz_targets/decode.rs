//! Decodes arbitrary bytes and checks every decoded packet survives encode and decode.
//!
//! The first input byte configures the decoder (protocol version, maximum packet size, chunk
//! size for incremental feeding); see `vane_proto::fuzzing` for the layout and the checks.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    vane_proto::fuzzing::check(data);
});
