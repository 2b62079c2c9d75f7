//! The files a source path names: one file, or the files of a folder whose names match a
//! pattern (`*`, `?`, `[abc]`, `[a-z]`, `[!x]`) in the path's last part, in name order.

use super::io_error;
use sluice_core::{ConnectorError, ErrorClass};
use std::path::{Path, PathBuf};

/// Whether the text holds a wildcard.
pub(crate) fn is_pattern(text: &str) -> bool {
    text.contains(['*', '?', '['])
}

/// The files `path` names, sorted. A plain path must exist; a pattern may match nothing.
pub(crate) fn expand(path: &Path) -> Result<Vec<PathBuf>, ConnectorError> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let dir = path.parent().unwrap_or(Path::new("."));
    if is_pattern(&dir.to_string_lossy()) {
        return Err(ConnectorError::new(
            ErrorClass::InvalidRequest,
            format!(
                "`path` {}: wildcards are only allowed in the file name, not in folders",
                path.display()
            ),
        ));
    }
    if !is_pattern(&name) {
        std::fs::metadata(path).map_err(|e| io_error("read", path, &e))?;
        return Ok(vec![path.to_path_buf()]);
    }
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let entries = std::fs::read_dir(dir).map_err(|e| io_error("list the folder", dir, &e))?;
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| io_error("list the folder", dir, &e))?;
        let file_name = entry.file_name().to_string_lossy().into_owned();
        if file_name.starts_with('.') && !name.starts_with('.') {
            continue;
        }
        if matches(name.as_bytes(), file_name.as_bytes())
            && entry
                .file_type()
                .is_ok_and(|t| t.is_file() || t.is_symlink())
        {
            out.push(dir.join(file_name));
        }
    }
    out.sort();
    Ok(out)
}

/// Whether `text` matches the wildcard `pattern`.
pub(crate) fn matches(pattern: &[u8], text: &[u8]) -> bool {
    match pattern.first() {
        None => text.is_empty(),
        Some(b'*') => (0..=text.len()).any(|i| matches(&pattern[1..], &text[i..])),
        Some(b'?') => !text.is_empty() && matches(&pattern[1..], &text[1..]),
        Some(b'[') => {
            let Some(close) = pattern
                .iter()
                .skip(2)
                .position(|&b| b == b']')
                .map(|p| p + 2)
            else {
                return text.first() == Some(&b'[') && matches(&pattern[1..], &text[1..]);
            };
            let Some(&c) = text.first() else {
                return false;
            };
            let (negate, set) = match pattern[1] {
                b'!' | b'^' => (true, &pattern[2..close]),
                _ => (false, &pattern[1..close]),
            };
            let mut hit = false;
            let mut i = 0;
            while i < set.len() {
                if i + 2 < set.len() && set[i + 1] == b'-' {
                    hit |= set[i] <= c && c <= set[i + 2];
                    i += 3;
                } else {
                    hit |= set[i] == c;
                    i += 1;
                }
            }
            hit != negate && matches(&pattern[close + 1..], &text[1..])
        }
        Some(&p) => text.first() == Some(&p) && matches(&pattern[1..], &text[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_like_a_shell() {
        for (p, t, want) in [
            ("*.ndjson", "a.ndjson", true),
            ("*.ndjson", "a.csv", false),
            ("orders-?.csv", "orders-1.csv", true),
            ("orders-?.csv", "orders-12.csv", false),
            ("[ab]*", "b1", true),
            ("[!ab]*", "b1", false),
            ("day-[0-9].json", "day-7.json", true),
            ("day-[0-9].json", "day-x.json", false),
        ] {
            assert_eq!(matches(p.as_bytes(), t.as_bytes()), want, "{p} {t}");
        }
    }
}
