//! Replays every committed corpus file and regression through its harness, so the invariants the
//! fuzzers checked keep holding in the ordinary test run (`cargo nextest run -p ebb-fuzz-harness`).

use ebb_fuzz_harness::{TARGETS, committed_inputs};

fn replay(target: &str) {
    let (_, run) = TARGETS
        .iter()
        .find(|(name, _)| *name == target)
        .unwrap_or_else(|| panic!("no target {target}"));
    let files = committed_inputs(target).expect("the corpus folders are readable");
    assert!(
        files.len() >= 5,
        "fuzz/corpus/{target}/ holds {} files: the seed corpus is missing",
        files.len()
    );
    for file in files {
        let data = std::fs::read(&file).expect("corpus file is readable");
        // A panic names the input that caused it.
        let outcome = std::panic::catch_unwind(|| run(&data));
        assert!(outcome.is_ok(), "{target}: {} broke an invariant", file.display());
    }
}

#[test]
fn validate_corpus_holds() {
    replay("validate");
}

#[test]
fn kafka_response_corpus_holds() {
    replay("kafka_response");
}

#[test]
fn selector_corpus_holds() {
    replay("selector");
}

#[test]
fn route_corpus_holds() {
    replay("route");
}

#[test]
fn metrics_api_value_corpus_holds() {
    replay("metrics_api_value");
}

#[test]
fn kafka_seeds_are_whole_responses() {
    // Every seed decodes, so the fuzzer starts from frames that reach the round-trip checks.
    let dir = ebb_fuzz_harness::fuzz_dir().join("seeds/kafka_response");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).expect("the kafka seeds exist") {
        let path = entry.expect("readable").path();
        let data = std::fs::read(&path).expect("readable");
        assert!(
            ebb_fuzz_harness::kafka_response::decodes(&data),
            "{} does not decode",
            path.display()
        );
        seen += 1;
    }
    assert!(seen >= 7, "one seed per response type at least");
}
