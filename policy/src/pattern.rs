//! Path patterns: collapsing observed paths with random parts, and matching paths against
//! patterns.
//!
//! Pattern syntax: `*` matches any run of characters within one path segment (never `/`);
//! a segment that is exactly `**` matches any number of segments, including none. Every
//! other character matches itself.
//!
//! Collapsing rules, applied to each segment of an absolute path (docs/profile-format.md):
//! 1. empty and `.` segments are dropped (`//`, `/./`);
//! 2. a segment of digits only becomes `*` (pids under /proc, fds, pts numbers, database
//!    object ids);
//! 3. a UUID (8-4-4-4-12 hex digits) anywhere in a segment becomes `*`;
//! 4. a part of a segment (between `.`, `-`, `_`) of 12 or more hex digits with at least one
//!    digit becomes `*` (container ids, content hashes);
//! 5. a number in brackets (`socket:[4711]`) becomes `[*]`;
//! 6. under a temp folder (/tmp, /var/tmp, /dev/shm, /run/user) a part of 6 or more letters
//!    and digits that has a digit or mixes cases becomes `*`, and so does whatever follows a
//!    `tmp` prefix (`tmp.Xa8fK2Qz1` and Python's `tmpk2j3h_4x` both become `tmp*`/`tmp.*`).

/// Temp folders in which rule 6 applies.
const TEMP_DIRS: &[&str] = &["/tmp", "/var/tmp", "/dev/shm", "/run/user"];

/// Collapses an observed path into the pattern the profile records.
pub fn collapse(path: &str) -> String {
    if !path.starts_with('/') {
        return path.to_string();
    }
    let in_temp = TEMP_DIRS
        .iter()
        .any(|dir| path == *dir || path.starts_with(&format!("{dir}/")));
    let mut out = String::with_capacity(path.len());
    let segments = path.split('/').filter(|s| !s.is_empty() && *s != ".");
    for (depth, segment) in segments.enumerate() {
        out.push('/');
        // The temp folder's own name is kept, rule 6 applies below it.
        let temp_child = in_temp && depth >= temp_depth(path);
        out.push_str(&collapse_segment(segment, temp_child));
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

fn temp_depth(path: &str) -> usize {
    TEMP_DIRS
        .iter()
        .find(|dir| path.starts_with(*dir))
        .map(|dir| dir.matches('/').count())
        .unwrap_or(0)
}

fn collapse_segment(segment: &str, in_temp: bool) -> String {
    if segment.bytes().all(|b| b.is_ascii_digit()) {
        return "*".to_string();
    }
    let segment = replace_uuids(segment);
    let segment = replace_bracket_numbers(&segment);
    if in_temp {
        if let Some(rest) = segment.strip_prefix("tmp") {
            let rest_trim = rest.trim_start_matches(['.', '-', '_']);
            let sep = &rest[..rest.len() - rest_trim.len()];
            if rest_trim.len() >= 6
                && rest_trim
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_')
            {
                return format!("tmp{sep}*");
            }
        }
    }
    map_parts(&segment, |part| {
        (is_hex_id(part) || (in_temp && is_random(part))).then(|| "*".to_string())
    })
}

/// Rebuilds `segment` with each part between separators replaced where `f` says so.
fn map_parts(segment: &str, f: impl Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(segment.len());
    let mut part = String::new();
    for c in segment.chars() {
        if matches!(c, '.' | '-' | '_') {
            out.push_str(&f(&part).unwrap_or_else(|| part.clone()));
            out.push(c);
            part.clear();
        } else {
            part.push(c);
        }
    }
    out.push_str(&f(&part).unwrap_or(part));
    out
}

fn is_hex_id(part: &str) -> bool {
    part.len() >= 12
        && part.bytes().all(|b| b.is_ascii_hexdigit())
        && part.bytes().any(|b| b.is_ascii_digit())
}

fn is_random(part: &str) -> bool {
    let alnum = part.len() >= 6 && part.bytes().all(|b| b.is_ascii_alphanumeric());
    let digit = part.bytes().any(|b| b.is_ascii_digit());
    let upper = part.bytes().any(|b| b.is_ascii_uppercase());
    let lower = part.bytes().any(|b| b.is_ascii_lowercase());
    alnum && (digit || (upper && lower))
}

fn replace_uuids(segment: &str) -> String {
    const SHAPE: [usize; 5] = [8, 4, 4, 4, 12];
    let bytes = segment.as_bytes();
    let mut out = String::with_capacity(segment.len());
    let mut i = 0;
    while i < bytes.len() {
        if let Some(len) = uuid_at(&bytes[i..], &SHAPE) {
            out.push('*');
            i += len;
        } else {
            out.push(bytes[i] as char);
            i += 1;
        }
    }
    if segment.is_ascii() {
        out
    } else {
        segment.to_string()
    }
}

fn uuid_at(bytes: &[u8], shape: &[usize]) -> Option<usize> {
    let mut pos = 0;
    for (n, len) in shape.iter().enumerate() {
        if n > 0 {
            (bytes.get(pos) == Some(&b'-')).then_some(())?;
            pos += 1;
        }
        let group = bytes.get(pos..pos + len)?;
        group.iter().all(u8::is_ascii_hexdigit).then_some(())?;
        pos += len;
    }
    Some(pos)
}

fn replace_bracket_numbers(segment: &str) -> String {
    match (segment.find('['), segment.ends_with(']')) {
        (Some(open), true) => {
            let inner = &segment[open + 1..segment.len() - 1];
            if !inner.is_empty() && inner.bytes().all(|b| b.is_ascii_digit()) {
                format!("{}[*]", &segment[..open])
            } else {
                segment.to_string()
            }
        }
        _ => segment.to_string(),
    }
}

/// Whether `path` matches `pattern` (syntax above). Both are compared segment by segment;
/// `path` is normalised like `collapse` does (empty and `.` segments dropped).
pub fn matches(pattern: &str, path: &str) -> bool {
    let pat: Vec<&str> = segments(pattern);
    let segs: Vec<&str> = segments(path);
    match_segments(&pat, &segs)
}

fn segments(path: &str) -> Vec<&str> {
    path.split('/')
        .filter(|s| !s.is_empty() && *s != ".")
        .collect()
}

fn match_segments(pat: &[&str], segs: &[&str]) -> bool {
    match pat.split_first() {
        None => segs.is_empty(),
        Some((&"**", rest)) => (0..=segs.len()).any(|skip| match_segments(rest, &segs[skip..])),
        Some((first, rest)) => match segs.split_first() {
            Some((seg, tail)) => {
                glob(first.as_bytes(), seg.as_bytes()) && match_segments(rest, tail)
            }
            None => false,
        },
    }
}

/// `*` matches any run of bytes; everything else matches itself.
fn glob(pat: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pat.len() && pat[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if p < pat.len() && pat[p] == text[t] {
            p += 1;
            t += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pat[p..].iter().all(|b| *b == b'*')
}

/// Whether `pattern` contains wildcards at all.
pub fn is_literal(pattern: &str) -> bool {
    !pattern.contains('*')
}

/// Checks that a pattern from a document is usable: absolute (or a unix abstract name) and
/// without `..` segments.
pub fn validate(pattern: &str) -> Result<(), String> {
    if !pattern.starts_with('/') {
        return Err("a path pattern must be absolute (start with /)".into());
    }
    if pattern.split('/').any(|s| s == "..") {
        return Err("a path pattern must not contain .. segments".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collapses_random_parts() {
        let cases = [
            ("/proc/4242/status", "/proc/*/status"),
            ("/proc/self/task/17/comm", "/proc/self/task/*/comm"),
            ("/proc/self/fd/3", "/proc/self/fd/*"),
            ("/tmp/tmp.Xa8fK2Qz1", "/tmp/tmp.*"),
            ("/tmp/tmpk2j3h_4x", "/tmp/tmp*"),
            ("/tmp/sess-a8F3kZ/data", "/tmp/sess-*/data"),
            ("/tmp/build-12345678.log", "/tmp/build-*.log"),
            ("/tmp/hello.txt", "/tmp/hello.txt"),
            ("/tmp", "/tmp"),
            (
                "/run/123e4567-e89b-12d3-a456-426614174000.pid",
                "/run/*.pid",
            ),
            ("/var/lib/x/3f2a9c0d1e2b4a5f/state", "/var/lib/x/*/state"),
            ("/usr/lib/python3.11/os.py", "/usr/lib/python3.11/os.py"),
            ("/etc//passwd", "/etc/passwd"),
            ("/etc/./hosts", "/etc/hosts"),
            (
                "/usr/share/zoneinfo/Europe/Berlin",
                "/usr/share/zoneinfo/Europe/Berlin",
            ),
            ("/var/cache/deadbeef", "/var/cache/deadbeef"),
            ("/dev/shm/sem.mp-Ab12cd", "/dev/shm/sem.mp-*"),
            ("socket:[4711]", "socket:[4711]"),
            ("/x/socket:[4711]", "/x/socket:[*]"),
        ];
        for (path, want) in cases {
            assert_eq!(collapse(path), want, "collapse({path})");
            assert!(matches(&collapse(path), path), "{want} must match {path}");
        }
    }

    #[test]
    fn collapse_is_idempotent() {
        for path in ["/proc/1/fd/7", "/tmp/tmp.AbC123xyz/f-1234567", "/a/b"] {
            let once = collapse(path);
            assert_eq!(collapse(&once), once);
        }
    }

    #[test]
    fn matches_star_within_a_segment_only() {
        assert!(matches("/proc/*/status", "/proc/77/status"));
        assert!(!matches("/proc/*/status", "/proc/77/task/78/status"));
        assert!(matches("/var/log/*.log", "/var/log/app.log"));
        assert!(!matches("/var/log/*.log", "/var/log/app.txt"));
        assert!(matches("/etc/passwd", "/etc/passwd"));
        assert!(!matches("/etc/passwd", "/etc/shadow"));
        assert!(!matches("/etc", "/etc/shadow"));
    }

    #[test]
    fn double_star_spans_segments() {
        assert!(matches("/usr/lib/**", "/usr/lib/x/y/z.so"));
        assert!(matches("/usr/lib/**", "/usr/lib"));
        assert!(matches("/srv/**/*.html", "/srv/a/b/index.html"));
        assert!(!matches("/srv/**/*.html", "/srv/a/b/index.php"));
    }

    #[test]
    fn validate_rejects_relative_and_dotdot() {
        assert!(validate("/etc/*").is_ok());
        assert!(validate("etc/passwd").is_err());
        assert!(validate("/etc/../shadow").is_err());
    }
}
