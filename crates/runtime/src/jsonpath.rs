//! A single pass over JSON text that knows where each value sits
//! (`process.user.uid`, `mounts[2].options`), without building the document.
//! It names the field of a parse error and checks that the config has objects
//! where the spec wants them, at a fraction of the cost of a second parse into
//! a generic value, and with no recursion whatever the nesting depth.

/// One step of a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    /// A key of an object.
    Key(String),
    /// An index into an array.
    Index(usize),
}

/// Formats a path the way error messages name fields.
pub fn format(path: &[Seg]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) if out.is_empty() => out.push_str(k),
            Seg::Key(k) => {
                out.push('.');
                out.push_str(k);
            }
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

enum Frame {
    Object,
    Array(usize),
}

fn skip_ws(data: &[u8], mut i: usize) -> usize {
    while i < data.len() && matches!(data[i], b' ' | b'\t' | b'\n' | b'\r') {
        i += 1;
    }
    i
}

/// Skips the string starting at `data[i] == '"'`; returns the index after it and,
/// when `decode`, its text (escapes decoded; invalid ones kept as written).
fn string(data: &[u8], mut i: usize, decode: bool) -> Option<(usize, String)> {
    i += 1;
    let mut out = Vec::new();
    while i < data.len() {
        match data[i] {
            b'"' => return Some((i + 1, String::from_utf8_lossy(&out).into_owned())),
            b'\\' => {
                let c = *data.get(i + 1)?;
                if decode {
                    match c {
                        b'n' => out.push(b'\n'),
                        b't' => out.push(b'\t'),
                        b'r' => out.push(b'\r'),
                        b'b' => out.push(8),
                        b'f' => out.push(12),
                        b'u' => {
                            let hex = std::str::from_utf8(data.get(i + 2..i + 6)?).ok()?;
                            let ch = u32::from_str_radix(hex, 16).ok().and_then(char::from_u32).unwrap_or('\u{fffd}');
                            out.extend_from_slice(ch.to_string().as_bytes());
                            i += 4;
                        }
                        other => out.push(other),
                    }
                }
                i += 2;
            }
            b => {
                if decode {
                    out.push(b);
                }
                i += 1;
            }
        }
    }
    None
}

/// Walks `data`, calling `visit(path, offset, first_byte)` at the start of every
/// value. Stops early when `visit` returns false, or at the first malformed
/// byte (the real parser reports syntax errors).
pub fn walk(data: &[u8], mut visit: impl FnMut(&[Seg], usize, u8) -> bool) {
    let mut path: Vec<Seg> = Vec::new();
    let mut stack: Vec<Frame> = Vec::new();
    let mut i = skip_ws(data, 0);
    'value: loop {
        // At the start of a value.
        let Some(&b) = data.get(i) else { return };
        if !visit(&path, i, b) {
            return;
        }
        match b {
            b'{' => {
                i = skip_ws(data, i + 1);
                if data.get(i) == Some(&b'}') {
                    i += 1;
                } else {
                    stack.push(Frame::Object);
                    let Some(next) = key(data, i, &mut path) else { return };
                    i = next;
                    continue 'value;
                }
            }
            b'[' => {
                i = skip_ws(data, i + 1);
                if data.get(i) == Some(&b']') {
                    i += 1;
                } else {
                    stack.push(Frame::Array(0));
                    path.push(Seg::Index(0));
                    continue 'value;
                }
            }
            b'"' => match string(data, i, false) {
                Some((next, _)) => i = next,
                None => return,
            },
            _ => {
                while i < data.len() && !matches!(data[i], b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r') {
                    i += 1;
                }
            }
        }
        // After a value: close containers until one continues.
        loop {
            i = skip_ws(data, i);
            let Some(frame) = stack.last_mut() else { return };
            path.pop();
            match (frame, data.get(i)) {
                (Frame::Object, Some(b',')) => {
                    let Some(next) = key(data, skip_ws(data, i + 1), &mut path) else { return };
                    i = next;
                    continue 'value;
                }
                (Frame::Array(n), Some(b',')) => {
                    *n += 1;
                    path.push(Seg::Index(*n));
                    i = skip_ws(data, i + 1);
                    continue 'value;
                }
                (Frame::Object, Some(b'}')) | (Frame::Array(_), Some(b']')) => {
                    stack.pop();
                    i += 1;
                }
                _ => return,
            }
        }
    }
}

/// Reads `"key" :` at `i`, pushes the key, returns the index of the value.
fn key(data: &[u8], i: usize, path: &mut Vec<Seg>) -> Option<usize> {
    if data.get(i) != Some(&b'"') {
        return None;
    }
    let (next, k) = string(data, i, true)?;
    let next = skip_ws(data, next);
    if data.get(next) != Some(&b':') {
        return None;
    }
    path.push(Seg::Key(k));
    Some(skip_ws(data, next + 1))
}

/// The path of the last value that starts at or before byte `offset`.
pub fn path_at(data: &[u8], offset: usize) -> Vec<Seg> {
    let mut found = Vec::new();
    walk(data, |path, at, _| {
        if at > offset {
            return false;
        }
        found.clear();
        found.extend_from_slice(path);
        true
    });
    found
}

/// The byte offset of 1-based `line` and `column` (as serde_json reports them).
pub fn offset_of(data: &[u8], line: usize, column: usize) -> usize {
    let mut start = 0;
    for _ in 1..line {
        match data[start..].iter().position(|&b| b == b'\n') {
            Some(p) => start += p + 1,
            None => break,
        }
    }
    (start + column.saturating_sub(1)).min(data.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_of_values() {
        let text = br#"{"a": {"b": [1, {"c": "x\"y"}], "d": null}, "e\u0041": [[], {}]}"#;
        let mut seen = Vec::new();
        walk(text, |p, _, b| {
            seen.push((format(p), b as char));
            true
        });
        let want = [
            ("", '{'),
            ("a", '{'),
            ("a.b", '['),
            ("a.b[0]", '1'),
            ("a.b[1]", '{'),
            ("a.b[1].c", '"'),
            ("a.d", 'n'),
            ("eA", '['),
            ("eA[0]", '['),
            ("eA[1]", '{'),
        ];
        assert_eq!(seen, want.map(|(p, c)| (p.to_string(), c)));
    }

    #[test]
    fn path_at_an_error_position() {
        let text = b"{\"process\": {\"user\": {\"uid\": -1}}}";
        let at = text.iter().position(|&b| b == b'-').expect("minus") + 2;
        assert_eq!(format(&path_at(text, at)), "process.user.uid");
        assert_eq!(offset_of(b"ab\ncd", 2, 2), 4);
    }

    #[test]
    fn malformed_and_deep_input_end_quietly() {
        walk(b"{\"a\": [1, 2", |_, _, _| true);
        walk(b"{\"a\" 1}", |_, _, _| true);
        let deep = "[".repeat(200_000);
        let mut n = 0;
        walk(deep.as_bytes(), |_, _, _| {
            n += 1;
            true
        });
        assert_eq!(n, 200_000);
    }
}
