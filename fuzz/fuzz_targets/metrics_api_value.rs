#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| ebb_fuzz_harness::metrics_api_value::run(data));
