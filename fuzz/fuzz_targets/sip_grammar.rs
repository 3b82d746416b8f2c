#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| telagent::fuzz::sip_grammar(data));
