//! The fuzz corpora (fuzz/corpus/<target>/, seeded from real captures and files of the
//! peers, plus every input a fuzz run ever crashed on) replayed through the parsers on the
//! stable toolchain: none may panic.

use std::path::PathBuf;

#[test]
fn every_corpus_replays_without_a_panic() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
    let mut replayed = 0;
    for (name, target) in telagent::fuzz::TARGETS {
        let dir = root.join(name);
        let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let mut n = 0;
        for e in entries {
            let path = e.unwrap().path();
            let data = std::fs::read(&path).unwrap();
            let outcome = std::panic::catch_unwind(|| target(&data));
            assert!(outcome.is_ok(), "{name} panicked on {}", path.display());
            n += 1;
        }
        assert!(n > 0, "{name} has an empty corpus");
        replayed += n;
    }
    // Every fuzz target of fuzz/fuzz_targets has a corpus here.
    let targets = std::fs::read_dir(root.join("../fuzz_targets"))
        .unwrap()
        .count();
    assert_eq!(targets, telagent::fuzz::TARGETS.len());
    assert!(replayed >= 20, "{replayed} inputs");
}
