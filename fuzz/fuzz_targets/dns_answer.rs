#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| telagent::fuzz::dns_answer(data));
