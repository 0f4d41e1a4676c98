//! Every relative link in the user documentation points at a file that exists, and every
//! `#anchor` at a heading of that file (GitHub's slug rules), so a renamed page or section
//! cannot leave a dead link behind.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The Markdown files users read: the READMEs, ARCHITECTURE.md and everything under docs/.
fn documents(root: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = [
        "README.md",
        "ARCHITECTURE.md",
        "charts/ebb/README.md",
        "bench/README.md",
    ]
    .iter()
    .map(|p| root.join(p))
    .filter(|p| p.exists())
    .collect();
    let mut stack = vec![root.join("docs")];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).expect("docs/ is readable").flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "md") {
                out.push(path);
            }
        }
    }
    out
}

/// The targets of inline links `[text](target)` outside code spans and fenced blocks.
fn link_targets(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        // Drop code spans, whose brackets are not links.
        let mut plain = String::new();
        for (i, part) in line.split('`').enumerate() {
            if i % 2 == 0 {
                plain.push_str(part);
            }
        }
        let mut rest = plain.as_str();
        while let Some(at) = rest.find("](") {
            let after = &rest[at + 2..];
            let Some(end) = after.find(')') else { break };
            let target = after[..end].split_whitespace().next().unwrap_or("");
            out.push(target.to_string());
            rest = &after[end..];
        }
    }
    out
}

/// GitHub's anchor for a heading: lower-case, punctuation other than `-` and `_` dropped,
/// spaces to hyphens.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

fn anchors(text: &str) -> BTreeSet<String> {
    let mut fenced = false;
    let mut out = BTreeSet::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
        } else if !fenced && line.starts_with('#') {
            out.insert(slug(line.trim_start_matches('#')));
        }
    }
    out
}

fn problems_in(root: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    for doc in documents(root) {
        let text = fs::read_to_string(&doc).expect("a readable document");
        let shown = doc.strip_prefix(root).unwrap_or(&doc).display().to_string();
        for target in link_targets(&text) {
            if target.is_empty() || target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            let (path, anchor) = match target.split_once('#') {
                Some((p, a)) => (p, Some(a)),
                None => (target.as_str(), None),
            };
            let file = if path.is_empty() {
                doc.clone()
            } else {
                doc.parent().expect("a document has a folder").join(path)
            };
            if !file.exists() {
                problems.push(format!(
                    "{shown}: link to {target}: {} does not exist",
                    file.display()
                ));
                continue;
            }
            if let Some(anchor) = anchor.filter(|a| !a.is_empty())
                && file.extension().is_some_and(|e| e == "md")
            {
                let headings = anchors(&fs::read_to_string(&file).expect("a readable target"));
                if !headings.contains(anchor) {
                    problems.push(format!(
                        "{shown}: link to {target}: no heading with anchor #{anchor}"
                    ));
                }
            }
        }
    }
    problems
}

#[test]
fn every_relative_link_in_the_documentation_resolves() {
    let problems = problems_in(&repo_root());
    assert!(problems.is_empty(), "dead links:\n{}", problems.join("\n"));
}

#[test]
fn the_checker_finds_a_dead_file_and_a_dead_anchor() {
    let dir = std::env::temp_dir().join(format!("ebb-docs-links-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(dir.join("docs")).unwrap();
    fs::write(
        dir.join("README.md"),
        "# Top\n[ok](docs/a.md#a-section) [gone](docs/missing.md) [bad](docs/a.md#nope) `[x](no.md)`\n\
         ```\n[fenced](nowhere.md)\n```\n[web](https://example.com/x.md) [self](#top)\n",
    )
    .unwrap();
    fs::write(dir.join("docs/a.md"), "# A\n## A section!\n").unwrap();
    let problems = problems_in(&dir);
    let _ = fs::remove_dir_all(&dir);
    assert_eq!(problems.len(), 2, "{problems:#?}");
    assert!(problems[0].contains("docs/missing.md"), "{problems:#?}");
    assert!(problems[1].contains("#nope"), "{problems:#?}");
}

#[test]
fn slugs_follow_github() {
    assert_eq!(slug(" Every difference from KEDA"), "every-difference-from-keda");
    assert_eq!(slug("RBAC: what ebb may do"), "rbac-what-ebb-may-do");
    assert_eq!(
        slug("1. Rewrite the manifests: `ebb migrate`"),
        "1-rewrite-the-manifests-ebb-migrate"
    );
}
