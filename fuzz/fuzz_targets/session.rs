//! Drives a `vane_core::Session` through a CONNECT and a sequence of operations decoded from the
//! input (client packets, deliveries, acknowledgements, time, dropped and resumed connections)
//! and checks what it writes; see `vane_core::fuzzing` for the input layout and the invariants.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    vane_core::fuzzing::check(data);
});
