//! Property test: random mutations of the example pipelines (delete, duplicate or
//! re-indent a line, replace a token, truncate the file) never panic, and always yield
//! either a plan or at least one error, every diagnostic pointing at a line of the file.

use proptest::prelude::*;
use sluice_config::{Env, validate};
use std::path::Path;

fn examples() -> Vec<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../pipelines");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("pipelines/ exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    files
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect()
}

#[derive(Debug, Clone)]
enum Mutation {
    DeleteLine(usize),
    DuplicateLine(usize),
    Indent(usize, i8),
    ReplaceToken(usize, &'static str),
    SwapLines(usize, usize),
    Truncate(usize),
}

const TOKENS: &[&str] = &[
    "",
    ":",
    "- ",
    "{",
    "}",
    "[",
    "]",
    "\"",
    "'",
    "&a",
    "*a",
    "<<: *a",
    "~",
    "null",
    "0",
    "-1",
    "99999999999999999999",
    "1.5",
    "true",
    "${X}",
    "${",
    "$${",
    "{{page}}",
    "{{",
    "type: http",
    "inputs: [x]",
    "after: [api]",
    "on_error: { network: split }",
    "cron: \"* * *\"",
    "5 minutes",
    "4M",
    "http://",
    "\t",
    "ü",
    "#",
];

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        any::<usize>().prop_map(Mutation::DeleteLine),
        any::<usize>().prop_map(Mutation::DuplicateLine),
        (any::<usize>(), -4i8..6).prop_map(|(l, d)| Mutation::Indent(l, d)),
        (any::<usize>(), prop::sample::select(TOKENS))
            .prop_map(|(l, t)| Mutation::ReplaceToken(l, t)),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Mutation::SwapLines(a, b)),
        any::<usize>().prop_map(Mutation::Truncate),
    ]
}

fn apply(text: &str, m: &Mutation) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    if lines.is_empty() {
        return String::new();
    }
    let n = lines.len();
    match m {
        Mutation::DeleteLine(i) => {
            lines.remove(i % n);
        }
        Mutation::DuplicateLine(i) => {
            let l = lines[i % n].clone();
            lines.insert(i % n, l);
        }
        Mutation::Indent(i, d) => {
            let l = &mut lines[i % n];
            if *d >= 0 {
                *l = format!("{}{l}", " ".repeat(*d as usize));
            } else {
                let strip = l
                    .chars()
                    .take((-*d) as usize)
                    .take_while(|c| *c == ' ')
                    .count();
                *l = l[strip..].to_owned();
            }
        }
        Mutation::ReplaceToken(i, token) => {
            let l = &mut lines[i % n];
            let words: Vec<&str> = l.split(' ').collect();
            if let Some(pick) = words.iter().rposition(|w| !w.is_empty()) {
                let mut words: Vec<String> = words.iter().map(|w| (*w).to_owned()).collect();
                words[pick] = (*token).to_owned();
                *l = words.join(" ");
            }
        }
        Mutation::SwapLines(a, b) => lines.swap(a % n, b % n),
        Mutation::Truncate(at) => {
            let text = lines.join("\n");
            let mut cut = at % (text.len() + 1);
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            return text[..cut].to_owned();
        }
    }
    lines.join("\n") + "\n"
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn mutated_pipelines_yield_a_plan_or_positioned_errors(
        file in 0usize..64,
        mutations in prop::collection::vec(mutation(), 1..4),
    ) {
        let examples = examples();
        let mut text = examples[file % examples.len()].clone();
        for m in &mutations {
            text = apply(&text, m);
        }
        let lines = text.lines().count().max(1);
        let diagnostics = match validate(&text, &Env::new(), sluice_connectors::registry()) {
            Ok(plan) => plan.warnings,
            Err(invalid) => {
                prop_assert!(invalid.errors().count() > 0, "invalid without an error:\n{text}");
                invalid.diagnostics().to_vec()
            }
        };
        for d in &diagnostics {
            prop_assert!(d.pos.line >= 1 && d.pos.line <= lines, "line {} of {lines}: {}\n{text}", d.pos.line, d.message);
            let width = text.lines().nth(d.pos.line - 1).map_or(0, |l| l.chars().count());
            prop_assert!(d.pos.column >= 1 && d.pos.column <= width + 1, "column {} past line {} ({width} chars): {}\n{text}", d.pos.column, d.pos.line, d.message);
            prop_assert!(!d.message.is_empty());
        }
    }
}

#[test]
fn every_example_is_valid_as_is() {
    for text in examples() {
        assert!(
            validate(&text, &Env::new(), sluice_connectors::registry()).is_ok(),
            "{text}"
        );
    }
}
