//! SharePoint Online name, path and size rules, checked before an item is
//! uploaded, and the replace-or-skip policy SPMT offers for invalid names.
//!
//! Source of the rules: Microsoft's "Restrictions and limitations in OneDrive
//! and SharePoint" (support.microsoft.com, article 64883a5d). Where that page
//! is silent, the choice made here is written next to the rule:
//!
//! | rule | applies to | fixable by "replace" |
//! |---|---|---|
//! | characters `" * : < > ? / \ |` | files and folders | yes, each becomes the policy's character |
//! | control characters U+0000–U+001F, U+007F–U+009F (not on the page; PnPjs's SharePoint Online check refuses them, and they cannot be typed into SharePoint) | files and folders | yes |
//! | leading or trailing space (U+0020 only; a no-break space is allowed) | files and folders | yes, trimmed |
//! | reserved names `.lock`, `CON`, `PRN`, `AUX`, `NUL`, `COM0`–`COM9`, `LPT0`–`LPT9`, `desktop.ini` — the *whole* name, ASCII case-insensitive (`CON.txt` and `a.lock` are allowed: the page lists names, not stems) | files and folders | no |
//! | `_vti_` anywhere in the name, case-insensitive | files and folders | no |
//! | name starting with `~$` | files and folders | no |
//! | folder name starting with `~` | folders | no |
//! | `forms`, case-insensitive | a folder directly at the library root | no |
//! | the decoded server-relative path longer than 400 | every item | no |
//! | more than 250 GB | files | no |
//!
//! SPMT's "replace invalid characters" replaces characters only; it never
//! renames a reserved name. Ferry does the same, so a reserved name fails with
//! a reason under either policy's fix-up and is never silently renamed into
//! something the user did not choose.
//!
//! Path length is counted in UTF-16 code units, the length SharePoint (a .NET
//! service) measures: `é` counts 1, a CJK ideograph 1, an emoji outside the
//! Basic Multilingual Plane 2. The page says the path "can't contain more than
//! 400 characters", so 400 is allowed and 401 is not.

use std::borrow::Cow;
use std::fmt;

use crate::model::{FailureCategory, InvalidNamePolicy};

/// The longest decoded server-relative path SharePoint Online accepts, in
/// UTF-16 code units (inclusive).
pub const MAX_PATH_LENGTH: usize = 400;

/// The largest file SharePoint Online accepts: 250 GB with Microsoft's binary
/// gigabyte (the unit SharePoint's storage limits use), i.e.
/// 250 × 1024³ = 268,435,456,000 bytes, inclusive.
pub const MAX_FILE_SIZE: u64 = 250 * 1024 * 1024 * 1024;

/// Characters SharePoint Online refuses anywhere in a file or folder name.
pub const INVALID_CHARACTERS: [char; 9] = ['"', '*', ':', '<', '>', '?', '/', '\\', '|'];

/// Whole names (ASCII case-insensitive) SharePoint Online refuses.
pub const RESERVED_NAMES: [&str; 26] = [
    ".lock",
    "CON",
    "PRN",
    "AUX",
    "NUL",
    "COM0",
    "COM1",
    "COM2",
    "COM3",
    "COM4",
    "COM5",
    "COM6",
    "COM7",
    "COM8",
    "COM9",
    "LPT0",
    "LPT1",
    "LPT2",
    "LPT3",
    "LPT4",
    "LPT5",
    "LPT6",
    "LPT7",
    "LPT8",
    "LPT9",
    "desktop.ini",
];

/// Why SharePoint Online would refuse an item.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NameProblem {
    /// The name is empty.
    Empty,
    /// The name contains a character SharePoint Online refuses (one of
    /// [`INVALID_CHARACTERS`] or a control character). Carries the first one.
    InvalidCharacter(char),
    /// The name starts or ends with a space.
    LeadingOrTrailingSpace,
    /// The whole name is one of [`RESERVED_NAMES`].
    ReservedName,
    /// The name contains `_vti_`.
    ContainsVti,
    /// The name starts with `~$` (Office's lock-file prefix).
    LockFilePrefix,
    /// A folder name starts with `~`.
    FolderStartsWithTilde,
    /// A folder named `forms` directly at the library root.
    FormsAtRoot,
    /// The decoded server-relative path is longer than [`MAX_PATH_LENGTH`].
    PathTooLong {
        /// Decoded length in UTF-16 code units.
        length: usize,
    },
    /// The file is larger than [`MAX_FILE_SIZE`].
    TooLarge { bytes: u64 },
}

impl NameProblem {
    /// What is wrong and what to do, for reports.
    pub fn message(&self) -> String {
        match self {
            NameProblem::Empty => {
                "The name is empty: give the item a name at the source.".to_string()
            }
            NameProblem::InvalidCharacter(c) => format!(
                "The name contains {}, which SharePoint Online does not allow: rename the item at the source or use the \"replace invalid characters\" setting.",
                describe_char(*c)
            ),
            NameProblem::LeadingOrTrailingSpace => {
                "The name starts or ends with a space, which SharePoint Online does not allow: remove the space at the source or use the \"replace invalid characters\" setting.".to_string()
            }
            NameProblem::ReservedName => {
                "The name is reserved in SharePoint Online (.lock, CON, PRN, AUX, NUL, COM0-COM9, LPT0-LPT9, desktop.ini): rename the item at the source.".to_string()
            }
            NameProblem::ContainsVti => {
                "The name contains \"_vti_\", which SharePoint Online reserves: rename the item at the source.".to_string()
            }
            NameProblem::LockFilePrefix => {
                "The name starts with \"~$\" (an Office lock file), which SharePoint Online does not allow: close the document or rename the item at the source.".to_string()
            }
            NameProblem::FolderStartsWithTilde => {
                "The folder name starts with \"~\", which SharePoint Online does not allow: rename the folder at the source.".to_string()
            }
            NameProblem::FormsAtRoot => {
                "A folder named \"forms\" is not allowed at the root of a SharePoint Online library: rename the folder at the source or migrate into a destination subfolder.".to_string()
            }
            NameProblem::PathTooLong { length } => format!(
                "The decoded path is {length} characters long; SharePoint Online allows at most {MAX_PATH_LENGTH}: shorten folder or file names, or migrate into a shorter destination path."
            ),
            NameProblem::TooLarge { bytes } => format!(
                "The file is {bytes} bytes; SharePoint Online accepts files up to 250 GB ({MAX_FILE_SIZE} bytes): split or compress the file at the source."
            ),
        }
    }

    /// The report category an item failed for this reason falls under.
    pub fn failure_category(&self) -> FailureCategory {
        match self {
            NameProblem::TooLarge { .. } => FailureCategory::TooLarge,
            _ => FailureCategory::InvalidName,
        }
    }

    /// Whether "replace invalid characters" can fix this problem.
    pub fn is_fixable_by_replacement(&self) -> bool {
        matches!(
            self,
            NameProblem::InvalidCharacter(_) | NameProblem::LeadingOrTrailingSpace
        )
    }
}

impl fmt::Display for NameProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message())
    }
}

impl std::error::Error for NameProblem {}

fn describe_char(c: char) -> String {
    if is_control(c) {
        format!("the control character U+{:04X}", u32::from(c))
    } else {
        format!("the character '{c}'")
    }
}

fn is_control(c: char) -> bool {
    matches!(u32::from(c), 0x00..=0x1F | 0x7F..=0x9F)
}

/// Whether SharePoint Online refuses `c` anywhere in a name.
pub fn is_invalid_char(c: char) -> bool {
    INVALID_CHARACTERS.contains(&c) || is_control(c)
}

/// Checks one file or folder name (not a path). `at_library_root` says whether
/// the item sits directly in the library's root folder (only matters for
/// `forms`). Reports the first problem in the order of the table in the module
/// documentation.
pub fn check_name(name: &str, at_library_root: bool, is_folder: bool) -> Result<(), NameProblem> {
    if name.is_empty() {
        return Err(NameProblem::Empty);
    }
    if let Some(c) = name.chars().find(|c| is_invalid_char(*c)) {
        return Err(NameProblem::InvalidCharacter(c));
    }
    if name.starts_with(' ') || name.ends_with(' ') {
        return Err(NameProblem::LeadingOrTrailingSpace);
    }
    check_unfixable(name, at_library_root, is_folder)
}

/// The rules "replace invalid characters" cannot fix.
fn check_unfixable(name: &str, at_library_root: bool, is_folder: bool) -> Result<(), NameProblem> {
    if RESERVED_NAMES.iter().any(|r| r.eq_ignore_ascii_case(name)) {
        return Err(NameProblem::ReservedName);
    }
    if name.to_ascii_lowercase().contains("_vti_") {
        return Err(NameProblem::ContainsVti);
    }
    if name.starts_with("~$") {
        return Err(NameProblem::LockFilePrefix);
    }
    if is_folder && name.starts_with('~') {
        return Err(NameProblem::FolderStartsWithTilde);
    }
    if is_folder && at_library_root && name.eq_ignore_ascii_case("forms") {
        return Err(NameProblem::FormsAtRoot);
    }
    Ok(())
}

/// What to do with one name under the job's [`InvalidNamePolicy`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NameDecision {
    /// The name is valid as it is.
    Keep,
    /// Upload under this name instead (policy "replace"; the new name is valid).
    Rename(String),
    /// Leave the item out and report it skipped (policy "skip").
    Skip(NameProblem),
    /// Report the item failed: replacing characters cannot make it valid
    /// (reserved name, `_vti_`, `~$`, `forms`, or a replacement character
    /// that is itself invalid).
    Fail(NameProblem),
}

/// Applies the job's invalid-name policy to one name.
///
/// With [`InvalidNamePolicy::Replace`], every invalid character becomes `with`
/// and leading/trailing spaces are trimmed; the result is checked again and
/// only a valid result is returned as [`NameDecision::Rename`]. A name that
/// stays invalid fails with the remaining problem (with the original problem
/// when trimming left nothing).
pub fn apply_policy(
    name: &str,
    at_library_root: bool,
    is_folder: bool,
    policy: &InvalidNamePolicy,
) -> NameDecision {
    let problem = match check_name(name, at_library_root, is_folder) {
        Ok(()) => return NameDecision::Keep,
        Err(problem) => problem,
    };
    let with = match policy {
        InvalidNamePolicy::Skip => return NameDecision::Skip(problem),
        InvalidNamePolicy::Replace { with } => *with,
    };
    if !problem.is_fixable_by_replacement() {
        return NameDecision::Fail(problem);
    }
    let replaced: String = name
        .chars()
        .map(|c| if is_invalid_char(c) { with } else { c })
        .collect();
    let trimmed = replaced.trim_matches(' ');
    match check_name(trimmed, at_library_root, is_folder) {
        Ok(()) => NameDecision::Rename(trimmed.to_string()),
        Err(NameProblem::Empty) => NameDecision::Fail(problem),
        Err(remaining) => NameDecision::Fail(remaining),
    }
}

/// Percent-decodes a server-relative path (`%20` → space). Malformed escapes
/// (`%`, `%2`, `%zz`) are kept literally; bytes that do not form UTF-8 become
/// U+FFFD. `+` is not a space in a path and stays `+`.
pub fn decode_path(path: &str) -> Cow<'_, str> {
    percent_encoding::percent_decode_str(path).decode_utf8_lossy()
}

/// Length of an already-decoded path as SharePoint measures it (UTF-16 code
/// units).
pub fn path_length(decoded_path: &str) -> usize {
    decoded_path.encode_utf16().count()
}

/// Checks the length of a server-relative path as it appears in a URL, e.g.
/// `/sites/hr/Shared%20Documents/a/b.txt` (percent-encoded or not): it is
/// decoded first, so `%20` counts as one character.
pub fn check_path(server_relative_path: &str) -> Result<(), NameProblem> {
    check_decoded_path(&decode_path(server_relative_path))
}

/// Checks the length of a server-relative path that is already decoded (a `%`
/// in it is a literal percent sign, e.g. a file named `100%.txt`).
pub fn check_decoded_path(decoded_path: &str) -> Result<(), NameProblem> {
    let length = path_length(decoded_path);
    if length > MAX_PATH_LENGTH {
        return Err(NameProblem::PathTooLong { length });
    }
    Ok(())
}

/// Checks a file's size against [`MAX_FILE_SIZE`].
pub fn check_size(bytes: u64) -> Result<(), NameProblem> {
    if bytes > MAX_FILE_SIZE {
        return Err(NameProblem::TooLarge { bytes });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fmt::Debug;

    /// Runs every row and reports all mismatching rows at once.
    fn check<I: Debug, O: PartialEq + Debug>(f: impl Fn(&I) -> O, rows: &[(I, O)]) {
        let failures: Vec<String> = rows
            .iter()
            .filter_map(|(input, expected)| {
                let got = f(input);
                (got != *expected).then(|| format!("{input:?}: expected {expected:?}, got {got:?}"))
            })
            .collect();
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    use NameProblem as P;

    // (name, at_library_root, is_folder)
    type Item = (&'static str, bool, bool);
    const FILE: (bool, bool) = (false, false);

    fn file(name: &'static str) -> Item {
        (name, FILE.0, FILE.1)
    }

    #[test]
    fn names() {
        let mut rows: Vec<(Item, Result<(), NameProblem>)> = vec![
            (file("report.docx"), Ok(())),
            (file(""), Err(P::Empty)),
            (file("a"), Ok(())),
            // Characters SharePoint Online allows (older SharePoint did not).
            (file("# & % { } ~ [ ] . , ; = + ' `"), Ok(())),
            (file("100%25.txt"), Ok(())),
            (file("budget.2024..xlsx"), Ok(())),
            (file("trailing."), Ok(())),
            (file(".hidden"), Ok(())),
            // Unicode is fine.
            (file("résumé.pdf"), Ok(())),
            (file("報告書.xlsx"), Ok(())),
            (file("😀.png"), Ok(())),
            (file("\u{00A0}nbsp\u{00A0}"), Ok(())),
            (file("\u{00A0}"), Ok(())),
            // Spaces: only leading/trailing U+0020.
            (file("a b"), Ok(())),
            (file(" a"), Err(P::LeadingOrTrailingSpace)),
            (file("a "), Err(P::LeadingOrTrailingSpace)),
            (file(" "), Err(P::LeadingOrTrailingSpace)),
            (("folder ", false, true), Err(P::LeadingOrTrailingSpace)),
            // Control characters.
            (file("a\u{0}b"), Err(P::InvalidCharacter('\u{0}'))),
            (file("a\tb"), Err(P::InvalidCharacter('\t'))),
            (file("a\nb"), Err(P::InvalidCharacter('\n'))),
            (file("a\u{1F}b"), Err(P::InvalidCharacter('\u{1F}'))),
            (file("a\u{7F}b"), Err(P::InvalidCharacter('\u{7F}'))),
            (file("a\u{80}b"), Err(P::InvalidCharacter('\u{80}'))),
            (file("a\u{9F}b"), Err(P::InvalidCharacter('\u{9F}'))),
            (file("a\u{A0}b"), Ok(())),
            (file("a\u{20}b"), Ok(())),
            (file("a\u{7E}b"), Ok(())),
            // The first invalid character is reported, before spaces.
            (file(" a:b*c "), Err(P::InvalidCharacter(':'))),
            // Reserved names: the whole name, any ASCII case.
            (file("CON.txt"), Ok(())),
            (file("con.txt"), Ok(())),
            (file("CONSOLE"), Ok(())),
            (file("COM10"), Ok(())),
            (file("LPT10"), Ok(())),
            (file("a.lock"), Ok(())),
            (file(".lock.txt"), Ok(())),
            (file("lock"), Ok(())),
            (file("desktop.ini.bak"), Ok(())),
            (file("my desktop.ini"), Ok(())),
            (file(".LOCK"), Err(P::ReservedName)),
            (file(".Lock"), Err(P::ReservedName)),
            (file("Desktop.INI"), Err(P::ReservedName)),
            (("desktop.ini", true, true), Err(P::ReservedName)),
            // _vti_ anywhere, any case.
            (file("_vti_"), Err(P::ContainsVti)),
            (file("_vti_cnf"), Err(P::ContainsVti)),
            (file("report_vti_2024.docx"), Err(P::ContainsVti)),
            (file("a_VTI_b"), Err(P::ContainsVti)),
            (("x_Vti_", false, true), Err(P::ContainsVti)),
            (file("_vti"), Ok(())),
            (file("vti_"), Ok(())),
            (file("_vt_i_"), Ok(())),
            // ~$ prefix for files and folders; ~ alone only for folders.
            (file("~$doc.docx"), Err(P::LockFilePrefix)),
            (("~$folder", false, true), Err(P::LockFilePrefix)),
            (file("a~$doc.docx"), Ok(())),
            (file("~doc.docx"), Ok(())),
            (file("$~doc.docx"), Ok(())),
            (("~folder", false, true), Err(P::FolderStartsWithTilde)),
            (("~folder", true, true), Err(P::FolderStartsWithTilde)),
            (("a~", false, true), Ok(())),
            // forms: a folder at the library root only.
            (("forms", true, true), Err(P::FormsAtRoot)),
            (("Forms", true, true), Err(P::FormsAtRoot)),
            (("FORMS", true, true), Err(P::FormsAtRoot)),
            (("forms", false, true), Ok(())),
            (("forms", true, false), Ok(())),
            (("forms2", true, true), Ok(())),
            (("my forms", true, true), Ok(())),
        ];
        for c in INVALID_CHARACTERS {
            let name: &'static str = Box::leak(format!("a{c}b").into_boxed_str());
            rows.push((file(name), Err(P::InvalidCharacter(c))));
            let alone: &'static str = Box::leak(c.to_string().into_boxed_str());
            rows.push(((alone, true, true), Err(P::InvalidCharacter(c))));
        }
        for base in ["CON", "PRN", "AUX", "NUL"] {
            for n in [base.to_string(), base.to_lowercase(), capitalise(base)] {
                let n: &'static str = Box::leak(n.into_boxed_str());
                rows.push((file(n), Err(P::ReservedName)));
                rows.push(((n, true, true), Err(P::ReservedName)));
            }
        }
        for prefix in ["COM", "LPT", "com", "Lpt"] {
            for d in 0..=9 {
                let n: &'static str = Box::leak(format!("{prefix}{d}").into_boxed_str());
                rows.push((file(n), Err(P::ReservedName)));
            }
        }
        check(|(n, root, folder)| check_name(n, *root, *folder), &rows);
    }

    fn capitalise(s: &str) -> String {
        let lower = s.to_lowercase();
        let mut chars = lower.chars();
        match chars.next() {
            Some(first) => first.to_uppercase().chain(chars).collect(),
            None => String::new(),
        }
    }

    #[test]
    fn policies() {
        use NameDecision::*;
        let replace = InvalidNamePolicy::Replace { with: '_' };
        let dash = InvalidNamePolicy::Replace { with: '-' };
        let bad_replacement = InvalidNamePolicy::Replace { with: '*' };
        let skip = InvalidNamePolicy::Skip;
        type Row<'a> = ((&'a str, bool, bool, &'a InvalidNamePolicy), NameDecision);
        let rows: Vec<Row> = vec![
            (("ok.txt", false, false, &replace), Keep),
            (("ok.txt", false, false, &skip), Keep),
            (
                ("a:b.txt", false, false, &replace),
                Rename("a_b.txt".into()),
            ),
            (("a:b.txt", false, false, &dash), Rename("a-b.txt".into())),
            (
                ("a:b.txt", false, false, &skip),
                Skip(P::InvalidCharacter(':')),
            ),
            (
                (r#"q"*:<>?/\|.txt"#, false, false, &replace),
                Rename("q_________.txt".into()),
            ),
            (
                ("tab\there", false, false, &replace),
                Rename("tab_here".into()),
            ),
            (
                (" padded ", false, false, &replace),
                Rename("padded".into()),
            ),
            (("  two  ", false, true, &replace), Rename("two".into())),
            (
                (" padded ", false, false, &skip),
                Skip(P::LeadingOrTrailingSpace),
            ),
            ((" a?b ", false, false, &replace), Rename("a_b".into())),
            // A replaced character at the edge is not a space: kept.
            (("?a?", false, false, &replace), Rename("_a_".into())),
            // Replacement must not create a space problem: a space replacement
            // next to the edge would be trimmed, and the name stays valid.
            (
                (
                    "a?",
                    false,
                    false,
                    &InvalidNamePolicy::Replace { with: ' ' },
                ),
                Rename("a".into()),
            ),
            // Nothing left after trimming: fail with the original problem.
            (
                ("   ", false, false, &replace),
                Fail(P::LeadingOrTrailingSpace),
            ),
            (("", false, false, &replace), Fail(P::Empty)),
            (("", false, false, &skip), Skip(P::Empty)),
            // Unfixable: fail under "replace", skip under "skip".
            (("CON", false, false, &replace), Fail(P::ReservedName)),
            (("CON", false, false, &skip), Skip(P::ReservedName)),
            (("a_vti_b", false, false, &replace), Fail(P::ContainsVti)),
            (
                ("~$a.docx", false, false, &replace),
                Fail(P::LockFilePrefix),
            ),
            (("~$a.docx", false, false, &skip), Skip(P::LockFilePrefix)),
            (
                ("~f", false, true, &replace),
                Fail(P::FolderStartsWithTilde),
            ),
            (("forms", true, true, &replace), Fail(P::FormsAtRoot)),
            (("forms", true, true, &skip), Skip(P::FormsAtRoot)),
            // Fixable, but the fixed name is reserved or still invalid.
            (("CON ", false, false, &replace), Fail(P::ReservedName)),
            ((" forms", true, true, &replace), Fail(P::FormsAtRoot)),
            (("a:_vti_", false, false, &replace), Fail(P::ContainsVti)),
            (
                ("a:b", false, false, &bad_replacement),
                Fail(P::InvalidCharacter('*')),
            ),
            // Replacing invalid characters that precede a reserved word.
            (("~$:x", false, false, &replace), Fail(P::LockFilePrefix)),
            (("é:😀", false, false, &replace), Rename("é_😀".into())),
            // Only U+0020 is trimmed; a no-break space stays.
            (
                ("\u{A0}a:b\u{A0}", false, false, &replace),
                Rename("\u{A0}a_b\u{A0}".into()),
            ),
            (("\ta ", false, false, &replace), Rename("_a".into())),
        ];
        check(
            |(n, root, folder, policy)| apply_policy(n, *root, *folder, policy),
            &rows,
        );
    }

    #[test]
    fn paths() {
        let path = |body: &str, n: usize, tail: &str| format!("/{}{}", body.repeat(n), tail);
        let rows: Vec<(String, Result<(), NameProblem>)> = vec![
            ("/sites/hr/Shared Documents/a/b.txt".into(), Ok(())),
            (String::new(), Ok(())),
            // ASCII: 1 + 399 = 400 is allowed, 401 is not.
            (path("a", 398, ""), Ok(())),
            (path("a", 399, ""), Ok(())),
            (path("a", 400, ""), Err(P::PathTooLong { length: 401 })),
            // é: 2 bytes, 1 UTF-16 unit.
            (path("é", 399, ""), Ok(())),
            (path("é", 400, ""), Err(P::PathTooLong { length: 401 })),
            // CJK: 3 bytes, 1 unit.
            (path("報", 399, ""), Ok(())),
            (path("報", 400, ""), Err(P::PathTooLong { length: 401 })),
            // Emoji: 4 bytes, 1 char, 2 units. 200 chars long but 401 units.
            (path("😀", 199, "a"), Ok(())),
            (path("😀", 200, ""), Err(P::PathTooLong { length: 401 })),
            // Percent-encoding: decoded first, %20 counts 1.
            (path("%20", 399, ""), Ok(())),
            (path("%20", 400, ""), Err(P::PathTooLong { length: 401 })),
            (path("%2F", 399, ""), Ok(())),
            (path("%2f", 400, ""), Err(P::PathTooLong { length: 401 })),
            (path("%C3%A9", 399, ""), Ok(())),
            (path("%C3%A9", 400, ""), Err(P::PathTooLong { length: 401 })),
            (path("%F0%9F%98%80", 199, "a"), Ok(())),
            (
                path("%F0%9F%98%80", 200, ""),
                Err(P::PathTooLong { length: 401 }),
            ),
            // Malformed escapes stay literal (3, 2, 1 characters).
            (path("%zz", 133, ""), Ok(())),
            (path("%zz", 133, "a"), Err(P::PathTooLong { length: 401 })),
            (path("a", 398, "%"), Ok(())),
            (path("a", 399, "%"), Err(P::PathTooLong { length: 401 })),
            (path("a", 397, "%4"), Ok(())),
            (path("a", 398, "%4"), Err(P::PathTooLong { length: 401 })),
            // Invalid UTF-8 after decoding: one replacement character.
            (path("a", 398, "%FF"), Ok(())),
            (path("a", 399, "%FF"), Err(P::PathTooLong { length: 401 })),
            // '+' is not a space in a path: one character either way.
            (path("+", 399, ""), Ok(())),
            (path("+", 400, ""), Err(P::PathTooLong { length: 401 })),
        ];
        check(|p: &String| check_path(p), &rows);
    }

    #[test]
    fn decoded_paths_and_lengths() {
        let rows: Vec<(&str, (String, usize))> = vec![
            ("/a%20b", ("/a b".into(), 4)),
            ("/a%2Fb", ("/a/b".into(), 4)),
            ("/a+b", ("/a+b".into(), 4)),
            ("/100%", ("/100%".into(), 5)),
            ("/%zz", ("/%zz".into(), 4)),
            ("/%FF", ("/\u{FFFD}".into(), 2)),
            ("/%F0%9F%98%80", ("/😀".into(), 3)),
            ("/%e5%a0%b1", ("/報".into(), 2)),
        ];
        check(
            |p: &&str| {
                let d = decode_path(p).into_owned();
                let n = path_length(&d);
                (d, n)
            },
            &rows,
        );
        // An already-decoded path is not decoded twice.
        let literal = format!("/{}", "%20".repeat(133));
        assert_eq!(check_decoded_path(&literal), Ok(()));
        assert_eq!(
            check_decoded_path(&format!("{literal}a")),
            Err(P::PathTooLong { length: 401 })
        );
    }

    #[test]
    fn sizes() {
        let rows: Vec<(u64, Result<(), NameProblem>)> = vec![
            (0, Ok(())),
            (250_000_000_000, Ok(())),
            (268_435_456_000 - 1, Ok(())),
            (268_435_456_000, Ok(())),
            (
                268_435_456_001,
                Err(P::TooLarge {
                    bytes: 268_435_456_001,
                }),
            ),
            (u64::MAX, Err(P::TooLarge { bytes: u64::MAX })),
        ];
        check(|b: &u64| check_size(*b), &rows);
        assert_eq!(MAX_FILE_SIZE, 268_435_456_000);
    }

    #[test]
    fn messages_say_what_to_do() {
        let all = [
            P::Empty,
            P::InvalidCharacter(':'),
            P::InvalidCharacter('\u{7}'),
            P::LeadingOrTrailingSpace,
            P::ReservedName,
            P::ContainsVti,
            P::LockFilePrefix,
            P::FolderStartsWithTilde,
            P::FormsAtRoot,
            P::PathTooLong { length: 401 },
            P::TooLarge { bytes: u64::MAX },
        ];
        let rows: Vec<(NameProblem, (bool, FailureCategory))> = all
            .iter()
            .map(|p| {
                let cat = if matches!(p, P::TooLarge { .. }) {
                    FailureCategory::TooLarge
                } else {
                    FailureCategory::InvalidName
                };
                (*p, (true, cat))
            })
            .collect();
        check(
            |p: &NameProblem| {
                let m = p.message();
                (m.contains(": ") && m.ends_with('.'), p.failure_category())
            },
            &rows,
        );
        assert!(P::InvalidCharacter('\u{7}').message().contains("U+0007"));
        assert!(P::PathTooLong { length: 401 }.to_string().contains("401"));
    }
}
