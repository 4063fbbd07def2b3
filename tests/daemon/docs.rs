//! The documentation cannot drift: every relative link of README.md, CHANGELOG.md and
//! docs/*.md resolves inside the repository (anchors included), and what the README says
//! `runbookd test playbooks/` prints is what it prints.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::Command,
};

use crate::helpers::BIN;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The markdown files a user reads.
fn pages() -> Vec<PathBuf> {
    let mut pages = vec![repo().join("README.md"), repo().join("CHANGELOG.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(repo().join("docs"))
        .expect("docs/")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    pages.extend(docs);
    pages
}

/// The text outside fenced code blocks.
fn prose(text: &str) -> String {
    let mut out = String::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if !fenced {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// Targets of `[text](target)` links.
fn links(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for piece in prose(text).split("](").skip(1) {
        if let Some(end) = piece.find(')') {
            let target = piece[..end].split_whitespace().next().unwrap_or("");
            out.push(target.to_string());
        }
    }
    out
}

/// GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == '-' || *c == '_' || *c == ' ')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The anchors a markdown file has: its headings' slugs and `<a id="…">`s.
fn anchors(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in prose(text).lines() {
        if let Some(h) = line.strip_prefix('#') {
            out.insert(slug(h.trim_start_matches('#')));
        }
    }
    for piece in text.split("<a id=\"").skip(1) {
        if let Some(end) = piece.find('"') {
            out.insert(piece[..end].to_string());
        }
    }
    out
}

/// The broken links of one page, as `page: target (why)`.
fn broken_links(page: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(page).unwrap_or_else(|e| panic!("{page:?}: {e}"));
    let dir = page.parent().expect("a directory");
    let root = repo().canonicalize().expect("repo");
    let name = page
        .strip_prefix(repo())
        .unwrap_or(page)
        .display()
        .to_string();
    let mut broken = Vec::new();
    for target in links(&text) {
        if target.contains("://") || target.starts_with("mailto:") || target.is_empty() {
            continue;
        }
        let (file, anchor) = match target.split_once('#') {
            Some((f, a)) => (f, Some(a)),
            None => (target.as_str(), None),
        };
        let path = if file.is_empty() {
            page.to_path_buf()
        } else {
            dir.join(file)
        };
        let Ok(real) = path.canonicalize() else {
            broken.push(format!("{name}: {target} (no such file)"));
            continue;
        };
        if !real.starts_with(&root) {
            broken.push(format!("{name}: {target} (outside the repository)"));
            continue;
        }
        if let Some(anchor) = anchor {
            let linked = std::fs::read_to_string(&real).unwrap_or_default();
            if real.extension().is_some_and(|e| e == "md") && !anchors(&linked).contains(anchor) {
                broken.push(format!("{name}: {target} (no such anchor)"));
            }
        }
    }
    broken
}

#[test]
fn every_relative_link_resolves_inside_the_repository() {
    let broken: Vec<String> = pages().iter().flat_map(|p| broken_links(p)).collect();
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn the_link_check_finds_what_is_broken() {
    // Inside the repository, as a page is.
    let dir = tempfile::Builder::new()
        .prefix(".link-check")
        .tempdir_in(repo())
        .expect("tempdir");
    let page = dir.path().join("page.md");
    std::fs::write(
        &page,
        "# A title\n[a](missing.md) [b](../../../etc/passwd) [c](#a-title) [d](#nope)\n\
         ```\n[not a link](in-code.md)\n```\n",
    )
    .expect("write");
    let broken = broken_links(&page);
    assert_eq!(broken.len(), 3, "{broken:?}");
    assert!(
        broken[0].contains("missing.md (no such file)"),
        "{broken:?}"
    );
    assert!(broken[1].contains("no such file") || broken[1].contains("outside"));
    assert!(broken[2].contains("#nope (no such anchor)"), "{broken:?}");
    assert_eq!(
        slug(" Scenario 3: Authentication / API key issues"),
        "scenario-3-authentication--api-key-issues"
    );
}

#[test]
fn the_readme_states_the_playbook_test_count_runbookd_test_prints() {
    let out = Command::new(BIN)
        .arg("test")
        .arg(repo().join("playbooks"))
        .env_remove("RUST_LOG")
        .output()
        .expect("runbookd test");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    let printed = stdout
        .lines()
        .rev()
        .find(|l| l.contains(" passed, "))
        .expect("a `N passed, N failed` line")
        .trim()
        .to_string();
    let readme = std::fs::read_to_string(repo().join("README.md")).expect("README");
    let stated: Vec<&str> = readme
        .lines()
        .filter_map(|l| {
            let i = l.find(" passed, ")?;
            let start = l[..i]
                .rfind(|c: char| !c.is_ascii_digit())
                .map_or(0, |s| s + 1);
            let end = l[i..].find(" failed").map(|e| i + e + " failed".len())?;
            let stated = &l[start..end];
            // `N passed, N failed` describes the line; a count starts with a digit.
            stated
                .starts_with(|c: char| c.is_ascii_digit())
                .then_some(stated)
        })
        .collect();
    assert!(!stated.is_empty(), "the README states the count");
    for s in stated {
        assert_eq!(
            s, printed,
            "README.md says `{s}`; runbookd test prints `{printed}`"
        );
    }
}

#[test]
fn the_test_world_api_is_documented_in_full() {
    let doc = std::fs::read_to_string(repo().join("docs/testing.md")).expect("testing.md");
    let dir = repo().join("src/sim/playtest");
    let files: Vec<_> = std::fs::read_dir(dir.join("api"))
        .expect("api/")
        .flatten()
        .map(|e| e.path())
        .collect();
    let mut registered = BTreeSet::new();
    for f in files {
        let text = std::fs::read_to_string(&f).expect("source");
        for piece in text.split("register_fn(").skip(1) {
            let piece = piece.trim_start();
            if let Some(name) = piece.strip_prefix('"').and_then(|p| p.split('"').next()) {
                registered.insert(name.to_string());
            }
        }
    }
    assert!(registered.contains("worker_log"), "{registered:?}");
    let undocumented: Vec<_> = registered
        .iter()
        .filter(|n| !doc.contains(&format!("`w.{n}(")) && !doc.contains(&format!("`{n}(")))
        .collect();
    assert!(
        undocumented.is_empty(),
        "docs/testing.md does not show these world functions: {undocumented:?}"
    );
}

#[test]
fn every_name_docs_runbook_md_cites_exists() {
    let doc = std::fs::read_to_string(repo().join("docs/runbook.md")).expect("runbook.md");
    let read = |rel: &str| std::fs::read_to_string(repo().join(rel)).unwrap_or_default();
    let playbook_tests: String = [
        "playbooks/tests/payment_processor_outage.rhai",
        "playbooks/tests/status_page.rhai",
    ]
    .iter()
    .map(|f| read(f))
    .collect();
    let playbooks: String = [
        "playbooks/payment_processor_outage.rhai",
        "playbooks/reconcile_payments.rhai",
        "playbooks/lib/runbook.rhai",
    ]
    .iter()
    .map(|f| read(f))
    .collect();
    let mut missing = Vec::new();
    let mut cited = 0;
    for name in doc.split('`').skip(1).step_by(2) {
        let name = name.trim_end_matches("()");
        if name.contains('…') {
            continue; // a pattern (`test_…`), not a name
        }
        let found = if name.starts_with("test_") {
            playbook_tests.contains(&format!("fn {name}("))
        } else if let Some(f) = name.strip_prefix("runbook::") {
            read("playbooks/lib/runbook.rhai").contains(&format!("fn {f}("))
        } else if let Some((module, f)) = name.split_once("::") {
            // A daemon test (`outage::…`) or a primitive (`stripe::ping`, in primitives.md).
            let f = f.split('(').next().unwrap_or(f);
            read(&format!("tests/daemon/{module}.rs")).contains(&format!("fn {f}("))
                || read("docs/primitives.md").contains(&format!("`{module}::{f}"))
        } else if name.chars().all(|c| c.is_ascii_lowercase() || c == '_')
            && name.contains('_')
            && playbooks.contains(&format!("fn {name}("))
        {
            true // a playbook function
        } else {
            continue;
        };
        cited += 1;
        if !found {
            missing.push(name.to_string());
        }
    }
    assert!(cited > 40, "the names are found in the text ({cited})");
    assert!(
        missing.is_empty(),
        "docs/runbook.md cites names the code lacks: {missing:?}"
    );
}
