//! `ebb validate` input: a YAML (or JSON) stream of manifests, read and checked.
//!
//! Invariants: no panic; every document is reported once, as an object or as skipped; an object
//! is valid exactly when it has no problems; `--strict` only adds problems; the JSON report
//! serializes; a valid object's normalized form, checked again in place of the original, is still
//! valid and normalizes to itself (defaulting is idempotent).

use ebb_operator::cli::validate::{
    BundleReport, CheckOptions, InputDocument, check_documents, check_documents_with, read_documents,
};

/// Runs one input.
pub fn run(data: &[u8]) {
    // `ebb validate` reads its files as UTF-8 text.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(docs) = read_documents("fuzz.yaml", text) else {
        return;
    };
    let report = check_documents(&docs);
    check_report(&docs, &report);
    let strict = check_documents_with(
        &docs,
        CheckOptions {
            strict: true,
            ..CheckOptions::default()
        },
    );
    check_report(&docs, &strict);
    for (lenient, strict) in report.objects.iter().zip(&strict.objects) {
        assert_eq!(lenient.source, strict.source);
        assert!(
            !strict.valid || lenient.valid,
            "{}: valid under --strict but not without it",
            lenient.source
        );
    }
    serde_json::to_string(&report).expect("the report serializes");
    check_normalized_is_stable(&docs, &report);
}

fn check_report(docs: &[InputDocument], report: &BundleReport) {
    assert_eq!(
        report.objects.len() + report.skipped.len(),
        docs.len(),
        "every document is an object or skipped"
    );
    for object in &report.objects {
        assert_eq!(object.valid, object.problems.is_empty(), "{}", object.source);
        assert!(docs.iter().any(|d| d.source == object.source));
    }
    assert_eq!(report.is_valid(), report.objects.iter().all(|o| o.valid));
    assert_eq!(
        report.problem_lines().len(),
        report.objects.iter().map(|o| o.problems.len()).sum::<usize>()
    );
}

fn check_normalized_is_stable(docs: &[InputDocument], report: &BundleReport) {
    let replaced: Vec<InputDocument> = docs
        .iter()
        .map(|doc| {
            let normalized = report
                .objects
                .iter()
                .find(|o| o.source == doc.source && o.valid)
                .and_then(|o| o.normalized.clone());
            InputDocument {
                source: doc.source.clone(),
                value: normalized.unwrap_or_else(|| doc.value.clone()),
            }
        })
        .collect();
    // What an annotated workload generates is a valid ScaledObject in its own right.
    let generated: Vec<InputDocument> = report
        .objects
        .iter()
        .filter_map(|o| {
            Some(InputDocument {
                source: o.source.clone(),
                value: o.generated.clone()?,
            })
        })
        .collect();
    for object in check_documents(&generated).objects {
        assert!(
            object.valid,
            "{}: the generated ScaledObject is invalid: {:?}",
            object.source, object.problems
        );
    }
    let again = check_documents(&replaced);
    for (before, after) in report.objects.iter().zip(&again.objects) {
        if !before.valid {
            continue;
        }
        assert!(
            after.valid,
            "{}: the normalized form is invalid: {:?}",
            before.source, after.problems
        );
        assert_eq!(
            before.normalized, after.normalized,
            "{}: normalizing twice changes the object",
            before.source
        );
    }
}
