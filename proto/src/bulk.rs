//! Parsers for SPMT's bulk task files: the header-less CSV and the JSON task
//! file. Both turn a file into [`TaskSpec`]s plus warnings, or into one
//! [`BulkError`] that names the file, the line and the field and says what to
//! do. No input makes them panic.
//!
//! Formats follow Microsoft's "Bulk upload SPMT migration tasks using JSON or
//! CSV files" (learn.microsoft.com, `how-to-format-your-csv-file-for-data-content-migration`)
//! and the `Add-SPMTTask` reference (`-JsonDefinition`).
//!
//! # CSV
//!
//! One task per row, no header, 8 columns: Source, Source DocLib, Source
//! SubFolder, Target Web, Target DocLib, Target SubFolder, RegisterAsHubSite,
//! AssociateWithHubURL. Rows with 6 columns (SPMT's older format, still used
//! by `Add-SPMTTask`'s "Load CSV" example) are accepted as having empty hub
//! columns; any other count is an error. Values are trimmed; blank rows (and
//! rows whose fields are all empty) are skipped; a UTF-8 BOM and CRLF line
//! ends are accepted. A first row that is the column header is skipped with a
//! warning (Microsoft says not to include one, but its older page showed one).
//!
//! | column | file-share source | SharePoint Server source |
//! |---|---|---|
//! | 1 Source | `\\server\share\dir`, `//server/share`, `C:\dir` or `/dir` → [`Source::FileShare`] | `http(s)://` site URL → [`Source::SharePointServer`] |
//! | 2 Source DocLib | must be empty | library title; empty = every library ("migrate all") |
//! | 3 Source SubFolder | must be empty | folder in that library (needs column 2) |
//! | 4 Target Web | http(s) site URL, required | same |
//! | 5 Target DocLib | required | required with a library; ignored (warning) for "migrate all": each library lands in the library of the same name |
//! | 6 Target SubFolder | optional | optional; ignored (warning) for "migrate all" |
//! | 7 RegisterAsHubSite | must be empty (SPMT: SharePoint sources only) | non-empty (a hub name, or TRUE/YES/1) → `SwitchToModern { hub: RegisterDestination }`; FALSE/NO/0 → no hub |
//! | 8 AssociateWithHubURL | must be empty | hub site URL → `SwitchToModern { hub: JoinExisting { hub } }`; not together with column 7 |
//!
//! Site URLs lose a trailing `/`; subfolders lose leading and trailing `/`.
//!
//! # JSON
//!
//! `{"Tasks":[task, …]}`. Keys are matched case-insensitively (SPMT reads the
//! file with .NET's case-insensitive JSON binding). Unknown keys are reported
//! as warnings and ignored, so files written for a newer SPMT still load.
//! A task:
//!
//! - `SourcePath` (required): a file-share path or a SharePoint Server site URL.
//! - `TargetPath` (required): the SharePoint Online site URL.
//! - `TargetList`, `TargetListRelativePath`: destination library and folder
//!   (file-share tasks: `TargetList` required).
//! - `SourceList`, `SourceListRelativePath` (SharePoint only, the
//!   `Add-SPMTTask` parameters of the same names): one library, without `Items`.
//! - `Items` (SharePoint only): `Lists: [{SourceList, TargetList,
//!   SourceListRelativePath?, TargetListRelativePath?}]` — each entry becomes
//!   its own task — and `SubSites: [{SourceSubSitePath, TargetSubSitePath,
//!   Lists?, SubSites?}]`, paths relative to the parent site (or absolute
//!   URLs); a subsite without lists and subsites migrates the whole subsite.
//! - No `Items` and no `SourceList` on a SharePoint source: the whole site.
//! - `Settings`: SPMT's per-task settings. Ferry's settings belong to the job,
//!   so they are ignored with a warning.

use std::collections::HashMap;
use std::fmt;

use serde_json::{Map, Value};

use crate::model::{Destination, HubChoice, SiteStructure, Source, TaskSpec};

/// The tasks a bulk file describes, with what was ignored along the way.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BulkTasks {
    pub tasks: Vec<TaskSpec>,
    /// One sentence each, located like errors (`tasks.csv line 2: …`).
    pub warnings: Vec<String>,
}

/// An error in a bulk task file, naming the file, line and field, and saying
/// what to fix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BulkError {
    /// The file name as the user gave it.
    pub file: String,
    /// 1-based line, when the problem has one.
    pub line: Option<usize>,
    /// `column 4 (Target Web)` for CSV, a path like `Tasks[2].TargetPath` or
    /// `column 7` (syntax errors) for JSON.
    pub field: Option<String>,
    /// What is wrong and what to do.
    pub problem: String,
}

impl fmt::Display for BulkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&located(
            &self.file,
            self.line,
            self.field.as_deref(),
            &self.problem,
        ))
    }
}

impl std::error::Error for BulkError {}

fn located(file: &str, line: Option<usize>, field: Option<&str>, text: &str) -> String {
    let mut out = file.to_string();
    if let Some(line) = line {
        out.push_str(&format!(" line {line}"));
    }
    if let Some(field) = field {
        out.push_str(if line.is_some() { ", " } else { " " });
        out.push_str(field);
    }
    out.push_str(": ");
    out.push_str(text);
    out
}

/// Parses a bulk file, choosing the format by extension (`.csv`, `.json`,
/// any case) or, for other names, by content (a file starting with `{` or `[`
/// is JSON).
pub fn parse(file_name: &str, text: &str) -> Result<BulkTasks, BulkError> {
    let lower = file_name.to_ascii_lowercase();
    if lower.ends_with(".json") {
        return parse_json(file_name, text);
    }
    if lower.ends_with(".csv") {
        return parse_csv(file_name, text);
    }
    let body = strip_bom(text).trim_start();
    if body.starts_with('{') || body.starts_with('[') {
        parse_json(file_name, text)
    } else {
        parse_csv(file_name, text)
    }
}

fn strip_bom(text: &str) -> &str {
    text.strip_prefix('\u{feff}').unwrap_or(text)
}

// ---------------------------------------------------------------------------
// Shared value rules
// ---------------------------------------------------------------------------

/// `http://host…` or `https://host…` with a non-empty host.
fn is_http_url(s: &str) -> bool {
    let lower = s.to_ascii_lowercase();
    let rest = if let Some(rest) = lower.strip_prefix("https://") {
        rest
    } else if let Some(rest) = lower.strip_prefix("http://") {
        rest
    } else {
        return false;
    };
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    !host.is_empty() && !host.contains(char::is_whitespace) && !s.contains(['\n', '\r', '\t'])
}

fn looks_like_url(s: &str) -> bool {
    s.contains("://")
}

/// `\\server\share…`, `//server/share…`, `C:\…`, `C:/…`, or an absolute POSIX
/// path (Ferry workers also run on Linux with the share mounted).
fn is_file_share_path(s: &str) -> bool {
    let b = s.as_bytes();
    let unc = (s.starts_with("\\\\") || s.starts_with("//")) && s.len() > 2;
    let drive =
        b.len() >= 3 && b[0].is_ascii_alphabetic() && b[1] == b':' && matches!(b[2], b'\\' | b'/');
    let posix = s.starts_with('/') && !s.starts_with("//");
    unc || drive || posix
}

fn site_url(s: &str) -> String {
    s.trim_end_matches('/').to_string()
}

fn folder(s: &str) -> Option<String> {
    let s = s.trim().trim_matches(['/', '\\']);
    (!s.is_empty()).then(|| s.to_string())
}

fn non_empty(s: &str) -> Option<String> {
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_string())
}

const SOURCE_HELP: &str = "enter a file-share path (\\\\server\\share\\folder, C:\\folder or /mnt/share) or a SharePoint Server site URL (https://intranet.example.com/sites/hr)";
const TARGET_HELP: &str = "the destination must be a SharePoint Online site URL, e.g. https://contoso.sharepoint.com/sites/hr";

// ---------------------------------------------------------------------------
// CSV
// ---------------------------------------------------------------------------

/// The columns of SPMT's bulk CSV, in order.
pub const CSV_COLUMNS: [&str; 8] = [
    "Source",
    "Source DocLib",
    "Source SubFolder",
    "Target Web",
    "Target DocLib",
    "Target SubFolder",
    "RegisterAsHubSite",
    "AssociateWithHubURL",
];

/// Parses SPMT's header-less bulk CSV (see the module documentation).
pub fn parse_csv(file_name: &str, text: &str) -> Result<BulkTasks, BulkError> {
    let text = strip_bom(text);
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(text.as_bytes());
    let mut out = BulkTasks::default();
    let mut six_column_lines = Vec::new();
    let mut first = true;
    let mut record = csv::StringRecord::new();
    loop {
        match reader.read_record(&mut record) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => {
                let line = e.position().map(|p| record_line(text, p.byte()));
                return Err(BulkError {
                    file: file_name.to_string(),
                    line,
                    field: None,
                    problem: format!("the CSV cannot be read ({e}): save the file as UTF-8 comma-separated values"),
                });
            }
        }
        let line = record.position().map_or(0, |p| record_line(text, p.byte()));
        let fields: Vec<&str> = record.iter().map(str::trim).collect();
        if fields.iter().all(|f| f.is_empty()) {
            continue;
        }
        let row = CsvRow {
            file: file_name,
            line,
            fields,
        };
        if std::mem::take(&mut first) && row.is_header() {
            out.warnings.push(located(
                file_name,
                Some(line),
                None,
                "this looks like a header row and was skipped: SPMT's CSV has no header, so remove it",
            ));
            continue;
        }
        row.check_shape()?;
        if row.fields.len() == 6 {
            six_column_lines.push(line.to_string());
        }
        out.tasks.push(row.task(&mut out.warnings)?);
    }
    if !six_column_lines.is_empty() {
        out.warnings.push(located(
            file_name,
            None,
            None,
            &format!(
                "the rows on line(s) {} have 6 columns (SPMT's older format): the hub columns RegisterAsHubSite and AssociateWithHubURL were taken as empty",
                six_column_lines.join(", ")
            ),
        ));
    }
    if out.tasks.is_empty() {
        return Err(BulkError {
            file: file_name.to_string(),
            line: None,
            field: None,
            problem: format!(
                "no tasks: add one row per task with the columns {}",
                CSV_COLUMNS.join(", ")
            ),
        });
    }
    Ok(out)
}

/// The 1-based line a record starts on. The csv crate's own line count skips
/// blank lines, and its byte offset can point at the blank lines before the
/// record, so skip those and count line feeds.
fn record_line(text: &str, byte: u64) -> usize {
    let bytes = text.as_bytes();
    let mut start = usize::try_from(byte).unwrap_or(usize::MAX).min(bytes.len());
    while bytes.get(start).is_some_and(|b| matches!(b, b'\r' | b'\n')) {
        start += 1;
    }
    1 + bytes[..start].iter().filter(|b| **b == b'\n').count()
}

struct CsvRow<'a> {
    file: &'a str,
    line: usize,
    fields: Vec<&'a str>,
}

impl CsvRow<'_> {
    fn err(&self, column: Option<usize>, problem: impl Into<String>) -> BulkError {
        BulkError {
            file: self.file.to_string(),
            line: Some(self.line),
            field: column.map(|c| {
                let name = CSV_COLUMNS.get(c).copied().unwrap_or("extra");
                format!("column {} ({name})", c + 1)
            }),
            problem: problem.into(),
        }
    }

    fn warn(&self, warnings: &mut Vec<String>, column: usize, text: &str) {
        let name = CSV_COLUMNS.get(column).copied().unwrap_or("extra");
        let field = format!("column {} ({name})", column + 1);
        warnings.push(located(self.file, Some(self.line), Some(&field), text));
    }

    fn get(&self, column: usize) -> &str {
        self.fields.get(column).copied().unwrap_or("")
    }

    fn is_header(&self) -> bool {
        let squash = |s: &str| s.replace([' ', '_'], "").to_ascii_lowercase();
        squash(self.get(0)) == "source" && squash(self.get(3)) == "targetweb"
    }

    fn check_shape(&self) -> Result<(), BulkError> {
        if let Some(c) = self.fields.iter().position(|f| f.contains(['\n', '\r'])) {
            return Err(self.err(
                Some(c),
                "the value spans several lines: a double quote is probably not closed; close it, or double a quote that belongs to the value (\"\")",
            ));
        }
        let n = self.fields.len();
        if n == 8 || n == 6 {
            return Ok(());
        }
        let hint = if self.get(0).starts_with(['{', '[']) {
            " (the file looks like JSON: give it a .json name)"
        } else if n == 1 && self.get(0).contains(';') {
            " (the row seems to use semicolons: save the file with commas as separators)"
        } else if n == 1 && self.get(0).contains('\t') {
            " (the row seems to use tabs: save the file with commas as separators)"
        } else {
            ""
        };
        Err(self.err(
            None,
            format!(
                "the row has {n} column{} but a task row has 8 ({}), or 6 in SPMT's older format without the hub columns{hint}: keep every comma, even for empty values, and quote values that contain commas",
                if n == 1 { "" } else { "s" },
                CSV_COLUMNS.join(", ")
            ),
        ))
    }

    fn task(&self, warnings: &mut Vec<String>) -> Result<TaskSpec, BulkError> {
        let source = self.get(0);
        let source_library = self.get(1);
        let source_folder = self.get(2);
        let target_web = self.get(3);
        let target_library = self.get(4);
        let target_folder = self.get(5);
        let register_hub = self.get(6);
        let join_hub = self.get(7);

        if source.is_empty() {
            return Err(self.err(Some(0), format!("the source is empty: {SOURCE_HELP}")));
        }
        let is_sharepoint = is_http_url(source);
        if !is_sharepoint && !is_file_share_path(source) {
            return Err(self.err(
                Some(0),
                format!("\"{source}\" is neither an http(s) URL nor an absolute file-share path: {SOURCE_HELP} (OneDrive log-in names and SIDs are not supported)"),
            ));
        }
        if target_web.is_empty() {
            return Err(self.err(Some(3), format!("the target site is empty: {TARGET_HELP}")));
        }
        if !is_http_url(target_web) {
            return Err(self.err(
                Some(3),
                format!("\"{target_web}\" is not an http(s) URL: {TARGET_HELP}"),
            ));
        }

        let source_spec = if is_sharepoint {
            if source_library.is_empty() && !source_folder.is_empty() {
                return Err(self.err(
                    Some(2),
                    "a source subfolder needs a source library: fill column 2 (Source DocLib) with the library the folder is in, or empty this column",
                ));
            }
            Source::SharePointServer {
                site_url: site_url(source),
                library: non_empty(source_library),
                subfolder: folder(source_folder),
            }
        } else {
            if !source_library.is_empty() {
                return Err(self.err(
                    Some(1),
                    "must be empty for a file-share source (it names a SharePoint Server library): empty it, or make column 1 a SharePoint Server site URL",
                ));
            }
            if !source_folder.is_empty() {
                return Err(self.err(
                    Some(2),
                    "must be empty for a file-share source: put the folder into the path in column 1 instead",
                ));
            }
            Source::FileShare {
                path: source.to_string(),
            }
        };

        let whole_site = is_sharepoint && source_library.is_empty();
        let destination = if whole_site {
            if !target_library.is_empty() {
                self.warn(warnings, 4, "ignored: column 2 is empty, so every library of the source site is migrated, each into the library of the same name");
            }
            if !target_folder.is_empty() {
                self.warn(warnings, 5, "ignored: column 2 is empty, so every library of the source site is migrated, each into its library's root");
            }
            Destination {
                site_url: site_url(target_web),
                library: None,
                subfolder: None,
            }
        } else {
            if target_library.is_empty() {
                return Err(self.err(
                    Some(4),
                    "the target library is empty: enter the destination document library, e.g. Documents",
                ));
            }
            Destination {
                site_url: site_url(target_web),
                library: Some(target_library.to_string()),
                subfolder: folder(target_folder),
            }
        };

        if !is_sharepoint {
            for (column, value) in [(6, register_hub), (7, join_hub)] {
                if !value.is_empty() {
                    return Err(self.err(
                        Some(column),
                        "hub columns apply to SharePoint Server sources only (as in SPMT): empty this column for a file-share source",
                    ));
                }
            }
        }
        if !register_hub.is_empty() && !join_hub.is_empty() {
            return Err(self.err(
                Some(7),
                "both RegisterAsHubSite and AssociateWithHubURL are filled: fill only one — column 7 to register the destination as a hub, column 8 to join an existing hub",
            ));
        }
        let hub = if !join_hub.is_empty() {
            if !is_http_url(join_hub) {
                return Err(self.err(
                    Some(7),
                    format!("\"{join_hub}\" is not an http(s) URL: enter the URL of an existing hub site, e.g. https://contoso.sharepoint.com/sites/hub"),
                ));
            }
            HubChoice::JoinExisting {
                hub: site_url(join_hub),
            }
        } else if register_hub.is_empty() || is_false(register_hub) {
            HubChoice::None
        } else {
            if !is_true(register_hub) {
                self.warn(warnings, 6, &format!("the destination site is registered as a hub; the hub name \"{register_hub}\" is not carried over, the hub takes the site's title"));
            }
            HubChoice::RegisterDestination
        };
        let structure = match hub {
            HubChoice::None => SiteStructure::KeepClassic,
            hub => SiteStructure::SwitchToModern { hub },
        };
        Ok(TaskSpec {
            source: source_spec,
            destination,
            structure,
            subsite_destinations: Default::default(),
        })
    }
}

fn is_true(s: &str) -> bool {
    ["true", "yes", "1"]
        .iter()
        .any(|t| s.eq_ignore_ascii_case(t))
}

fn is_false(s: &str) -> bool {
    ["false", "no", "0"]
        .iter()
        .any(|t| s.eq_ignore_ascii_case(t))
}

// ---------------------------------------------------------------------------
// JSON
// ---------------------------------------------------------------------------

/// Parses SPMT's JSON task file (see the module documentation).
pub fn parse_json(file_name: &str, text: &str) -> Result<BulkTasks, BulkError> {
    let text = strip_bom(text);
    if text.trim().is_empty() {
        return Err(BulkError {
            file: file_name.to_string(),
            line: None,
            field: None,
            problem: "the file is empty: write {\"Tasks\": [ {\"SourcePath\": …, \"TargetPath\": …}, … ]}".to_string(),
        });
    }
    let root: Value = serde_json::from_str(text).map_err(|e| {
        let message = e.to_string();
        let message = match message.rsplit_once(" at line ") {
            Some((head, _)) => head.to_string(),
            None => message,
        };
        BulkError {
            file: file_name.to_string(),
            line: Some(e.line()),
            field: Some(format!("column {}", e.column())),
            problem: format!("{message}: fix the JSON syntax there (usually a missing comma, quote or bracket; a backslash in a path must be doubled, as in \"C:\\\\folder\")"),
        }
    })?;
    let mut json = Json {
        file: file_name,
        lines: value_lines(text),
        warnings: Vec::new(),
    };
    let tasks = json.root(&root)?;
    Ok(BulkTasks {
        tasks,
        warnings: json.warnings,
    })
}

struct Json<'a> {
    file: &'a str,
    /// Line where each value starts, by path.
    lines: HashMap<String, usize>,
    warnings: Vec<String>,
}

/// The known keys of one JSON object, matched case-insensitively, each with
/// its path.
struct Fields<'v> {
    path: String,
    found: HashMap<&'static str, (String, &'v Value)>,
}

impl<'v> Fields<'v> {
    fn get(&self, key: &str) -> Option<&(String, &'v Value)> {
        self.found.get(key).filter(|(_, v)| !v.is_null())
    }

    /// Path a missing key would have.
    fn path_of(&self, key: &str) -> String {
        join(&self.path, key)
    }
}

fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "true/false",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

const TASK_KEYS: [&str; 8] = [
    "SourcePath",
    "TargetPath",
    "TargetList",
    "TargetListRelativePath",
    "SourceList",
    "SourceListRelativePath",
    "Items",
    "Settings",
];
const ITEMS_KEYS: [&str; 2] = ["Lists", "SubSites"];
const LIST_KEYS: [&str; 4] = [
    "SourceList",
    "TargetList",
    "SourceListRelativePath",
    "TargetListRelativePath",
];
const SUBSITE_KEYS: [&str; 4] = [
    "SourceSubSitePath",
    "TargetSubSitePath",
    "Lists",
    "SubSites",
];

impl Json<'_> {
    fn err(&self, path: &str, problem: impl Into<String>) -> BulkError {
        BulkError {
            file: self.file.to_string(),
            line: self.lines.get(path).copied(),
            field: (!path.is_empty()).then(|| path.to_string()),
            problem: problem.into(),
        }
    }

    /// An error about a key missing from the object at `fields.path`: located
    /// at the object's line, named by the key's path.
    fn missing(&self, fields: &Fields<'_>, key: &str, problem: &str) -> BulkError {
        BulkError {
            file: self.file.to_string(),
            line: self.lines.get(&fields.path).copied(),
            field: Some(fields.path_of(key)),
            problem: format!("{key} is missing or empty: {problem}"),
        }
    }

    fn warn(&mut self, path: &str, text: &str) {
        let line = self.lines.get(path).copied();
        let field = (!path.is_empty()).then_some(path);
        self.warnings.push(located(self.file, line, field, text));
    }

    fn object<'v>(
        &mut self,
        path: &str,
        value: &'v Value,
        what: &str,
        known: &[&'static str],
    ) -> Result<Fields<'v>, BulkError> {
        let Value::Object(map) = value else {
            return Err(self.err(
                path,
                format!("expected {what} (a JSON object), found {}", kind(value)),
            ));
        };
        Ok(self.fields(path, map, known))
    }

    fn fields<'v>(
        &mut self,
        path: &str,
        map: &'v Map<String, Value>,
        known: &[&'static str],
    ) -> Fields<'v> {
        let mut found = HashMap::new();
        for (key, value) in map {
            let key_path = join(path, key);
            match known.iter().find(|k| k.eq_ignore_ascii_case(key)) {
                Some(k) => {
                    found.insert(*k, (key_path, value));
                }
                None => {
                    let text = format!(
                        "unknown key \"{key}\" ignored (known here: {})",
                        known.join(", ")
                    );
                    self.warn(&key_path, &text);
                }
            }
        }
        Fields {
            path: path.to_string(),
            found,
        }
    }

    /// An optional string: absent, null and "" are `None`.
    fn string(
        &self,
        fields: &Fields<'_>,
        key: &str,
    ) -> Result<Option<(String, String)>, BulkError> {
        match fields.get(key) {
            None => Ok(None),
            Some((path, Value::String(s))) => Ok(non_empty(s).map(|s| (path.clone(), s))),
            Some((path, other)) => Err(self.err(
                path,
                format!(
                    "expected a string, found {}: write the value in double quotes",
                    kind(other)
                ),
            )),
        }
    }

    fn required(
        &self,
        fields: &Fields<'_>,
        key: &str,
        help: &str,
    ) -> Result<(String, String), BulkError> {
        self.string(fields, key)?
            .ok_or_else(|| self.missing(fields, key, help))
    }

    fn array<'v>(
        &self,
        fields: &Fields<'v>,
        key: &str,
    ) -> Result<Vec<(String, &'v Value)>, BulkError> {
        match fields.get(key) {
            None => Ok(Vec::new()),
            Some((path, Value::Array(items))) => Ok(items
                .iter()
                .enumerate()
                .map(|(i, v)| (format!("{path}[{i}]"), v))
                .collect()),
            Some((path, other)) => Err(self.err(
                path,
                format!("expected an array ([…]), found {}", kind(other)),
            )),
        }
    }

    fn root(&mut self, root: &Value) -> Result<Vec<TaskSpec>, BulkError> {
        let Value::Object(map) = root else {
            return Err(self.err(
                "",
                format!("expected a JSON object with a \"Tasks\" array, found {}: write {{\"Tasks\": [ … ]}}", kind(root)),
            ));
        };
        let single_task = map.keys().any(|k| k.eq_ignore_ascii_case("SourcePath"));
        let fields = if single_task {
            // Do not warn about every task key: the error below says what to do.
            Fields {
                path: String::new(),
                found: map
                    .iter()
                    .filter(|(k, _)| k.eq_ignore_ascii_case("Tasks"))
                    .map(|(k, v)| ("Tasks", (k.clone(), v)))
                    .collect(),
            }
        } else {
            self.fields("", map, &["Tasks"])
        };
        let Some((tasks_path, tasks)) = fields.get("Tasks").cloned() else {
            let hint = if single_task {
                "this looks like one task (an Add-SPMTTask -JsonDefinition); wrap it as {\"Tasks\": [ … ]}"
            } else {
                "write {\"Tasks\": [ {\"SourcePath\": …, \"TargetPath\": …}, … ]}"
            };
            return Err(BulkError {
                file: self.file.to_string(),
                line: Some(1),
                field: Some("Tasks".to_string()),
                problem: format!("Tasks is missing: {hint}"),
            });
        };
        let Value::Array(items) = tasks else {
            return Err(self.err(
                &tasks_path,
                format!("expected an array of tasks ([…]), found {}", kind(tasks)),
            ));
        };
        if items.is_empty() {
            return Err(self.err(
                &tasks_path,
                "no tasks: add at least one {\"SourcePath\": …, \"TargetPath\": …} to the array",
            ));
        }
        let mut out = Vec::new();
        for (i, task) in items.iter().enumerate() {
            out.extend(self.task(&format!("{tasks_path}[{i}]"), task)?);
        }
        Ok(out)
    }

    fn target_url(&self, path: &str, value: &str) -> Result<String, BulkError> {
        if is_http_url(value) {
            Ok(site_url(value))
        } else {
            Err(self.err(
                path,
                format!("\"{value}\" is not an http(s) URL: {TARGET_HELP}"),
            ))
        }
    }

    fn task(&mut self, path: &str, value: &Value) -> Result<Vec<TaskSpec>, BulkError> {
        let fields = self.object(path, value, "a task", &TASK_KEYS)?;
        let (source_path, source) = self.required(&fields, "SourcePath", SOURCE_HELP)?;
        let (target_path, target) = self.required(&fields, "TargetPath", TARGET_HELP)?;
        let target_site = self.target_url(&target_path, &target)?;
        let target_list = self.string(&fields, "TargetList")?;
        let target_folder = self.string(&fields, "TargetListRelativePath")?;
        let source_list = self.string(&fields, "SourceList")?;
        let source_folder = self.string(&fields, "SourceListRelativePath")?;
        if let Some((settings_path, _)) = fields.get("Settings") {
            let settings_path = settings_path.clone();
            self.warn(
                &settings_path,
                "per-task Settings are ignored: Ferry's settings apply to the whole job, set them there",
            );
        }

        if !is_http_url(&source) {
            if looks_like_url(&source) || !is_file_share_path(&source) {
                return Err(self.err(
                    &source_path,
                    format!("\"{source}\" is neither an http(s) URL nor an absolute file-share path: {SOURCE_HELP}"),
                ));
            }
            for key in ["Items", "SourceList", "SourceListRelativePath"] {
                if let Some((p, _)) = fields.get(key) {
                    return Err(self.err(
                        p,
                        format!("{key} applies to SharePoint Server sources only: remove it, or make SourcePath a site URL"),
                    ));
                }
            }
            let (_, library) = self.required(
                &fields,
                "TargetList",
                "name the destination document library, e.g. \"Documents\"",
            )?;
            return Ok(vec![TaskSpec {
                source: Source::FileShare { path: source },
                destination: Destination {
                    site_url: target_site,
                    library: Some(library),
                    subfolder: target_folder.and_then(|(_, f)| folder(&f)),
                },
                structure: SiteStructure::default(),
                subsite_destinations: Default::default(),
            }]);
        }

        let source_site = site_url(&source);
        if let Some((_, list)) = source_list {
            if let Some((p, _)) = fields.get("Items") {
                return Err(self.err(
                    p,
                    "a task with SourceList migrates that one library: remove Items, or move SourceList into Items.Lists",
                ));
            }
            let (_, target_list) = target_list.ok_or_else(|| {
                self.missing(
                    &fields,
                    "TargetList",
                    "name the destination library for SourceList",
                )
            })?;
            return Ok(vec![list_task(
                &source_site,
                &target_site,
                list,
                source_folder.map(|(_, f)| f),
                target_list,
                target_folder.map(|(_, f)| f),
            )]);
        }
        if let Some((p, _)) = &source_folder {
            return Err(self.err(
                p,
                "SourceListRelativePath needs SourceList: name the library the folder is in",
            ));
        }
        let Some((items_path, items)) = fields.get("Items").cloned() else {
            for (p, key) in [
                (&target_list, "TargetList"),
                (&target_folder, "TargetListRelativePath"),
            ] {
                if let Some((p, _)) = p {
                    let p = p.clone();
                    self.warn(&p, &format!("{key} ignored: without Items or SourceList the whole site is migrated, each library into the library of the same name"));
                }
            }
            return Ok(vec![whole_site(source_site, target_site)]);
        };
        for (p, key) in [
            (&target_list, "TargetList"),
            (&target_folder, "TargetListRelativePath"),
        ] {
            if let Some((p, _)) = p {
                let p = p.clone();
                self.warn(&p, &format!("{key} ignored: with Items, each entry of Items.Lists names its own TargetList"));
            }
        }
        let items_fields = self.object(&items_path, items, "Items", &ITEMS_KEYS)?;
        let tasks = self.site_items(&items_fields, &source_site, &target_site)?;
        if tasks.is_empty() {
            return Err(self.err(
                &items_path,
                "Items names no list and no subsite: add entries to Items.Lists or Items.SubSites, or remove Items to migrate the whole site",
            ));
        }
        Ok(tasks)
    }

    /// The `Lists` and `SubSites` of a site (a task's `Items` or a subsite).
    fn site_items(
        &mut self,
        fields: &Fields<'_>,
        source_site: &str,
        target_site: &str,
    ) -> Result<Vec<TaskSpec>, BulkError> {
        let mut out = Vec::new();
        for (path, list) in self.array(fields, "Lists")? {
            let lf = self.object(&path, list, "a list entry", &LIST_KEYS)?;
            let (_, source_list) = self.required(
                &lf,
                "SourceList",
                "name the source library, e.g. \"Documents\"",
            )?;
            let (_, target_list) = self.required(
                &lf,
                "TargetList",
                "name the destination library, e.g. \"Documents\"",
            )?;
            let source_folder = self.string(&lf, "SourceListRelativePath")?.map(|(_, f)| f);
            let target_folder = self.string(&lf, "TargetListRelativePath")?.map(|(_, f)| f);
            out.push(list_task(
                source_site,
                target_site,
                source_list,
                source_folder,
                target_list,
                target_folder,
            ));
        }
        for (path, subsite) in self.array(fields, "SubSites")? {
            let sf = self.object(&path, subsite, "a subsite entry", &SUBSITE_KEYS)?;
            let (sp, source_rel) = self.required(
                &sf,
                "SourceSubSitePath",
                "give the subsite's path relative to the source site, e.g. \"team\"",
            )?;
            let (tp, target_rel) = self.required(
                &sf,
                "TargetSubSitePath",
                "give the destination subsite's path relative to the target site, e.g. \"team\"",
            )?;
            let sub_source = self.sub_url(&sp, source_site, &source_rel)?;
            let sub_target = self.sub_url(&tp, target_site, &target_rel)?;
            let nested = self.site_items(&sf, &sub_source, &sub_target)?;
            if nested.is_empty() {
                out.push(whole_site(sub_source, sub_target));
            } else {
                out.extend(nested);
            }
        }
        Ok(out)
    }

    fn sub_url(&self, path: &str, parent: &str, relative: &str) -> Result<String, BulkError> {
        if looks_like_url(relative) {
            if is_http_url(relative) {
                return Ok(site_url(relative));
            }
            return Err(self.err(
                path,
                format!("\"{relative}\" is not an http(s) URL: give a path relative to the parent site, or a full http(s) URL"),
            ));
        }
        match folder(relative) {
            Some(rel) => Ok(format!("{parent}/{rel}")),
            None => Err(self.err(
                path,
                "the subsite path is empty: give the subsite's path relative to the parent site",
            )),
        }
    }
}

fn list_task(
    source_site: &str,
    target_site: &str,
    source_list: String,
    source_folder: Option<String>,
    target_list: String,
    target_folder: Option<String>,
) -> TaskSpec {
    TaskSpec {
        source: Source::SharePointServer {
            site_url: source_site.to_string(),
            library: Some(source_list),
            subfolder: source_folder.as_deref().and_then(folder),
        },
        destination: Destination {
            site_url: target_site.to_string(),
            library: Some(target_list),
            subfolder: target_folder.as_deref().and_then(folder),
        },
        structure: SiteStructure::default(),
        subsite_destinations: Default::default(),
    }
}

fn whole_site(source_site: String, target_site: String) -> TaskSpec {
    TaskSpec {
        source: Source::SharePointServer {
            site_url: source_site,
            library: None,
            subfolder: None,
        },
        destination: Destination {
            site_url: target_site,
            library: None,
            subfolder: None,
        },
        structure: SiteStructure::default(),
        subsite_destinations: Default::default(),
    }
}

/// The 1-based line where every value of a (syntactically valid) JSON text
/// starts, keyed by its path: `Tasks`, `Tasks[0]`, `Tasks[0].SourcePath`.
/// serde_json's `Value` forgets positions; this small scan recovers them so
/// that errors found after parsing still name a line.
fn value_lines(text: &str) -> HashMap<String, usize> {
    enum Frame {
        Object {
            path: String,
            key: Option<String>,
            after_colon: bool,
        },
        Array {
            path: String,
            index: usize,
        },
    }
    fn slot(stack: &[Frame]) -> Option<String> {
        match stack.last() {
            None => Some(String::new()),
            Some(Frame::Object {
                path,
                key: Some(key),
                after_colon: true,
            }) => Some(join(path, key)),
            Some(Frame::Object { .. }) => None,
            Some(Frame::Array { path, index }) => Some(format!("{path}[{index}]")),
        }
    }

    let mut lines = HashMap::new();
    let mut stack: Vec<Frame> = Vec::new();
    let mut line = 1;
    let mut chars = text.char_indices().peekable();
    while let Some((start, c)) = chars.next() {
        match c {
            '\n' => line += 1,
            c if c.is_whitespace() => {}
            '{' | '[' => {
                let path = slot(&stack).unwrap_or_default();
                lines.insert(path.clone(), line);
                stack.push(if c == '{' {
                    Frame::Object {
                        path,
                        key: None,
                        after_colon: false,
                    }
                } else {
                    Frame::Array { path, index: 0 }
                });
            }
            '}' | ']' => {
                stack.pop();
            }
            ':' => {
                if let Some(Frame::Object { after_colon, .. }) = stack.last_mut() {
                    *after_colon = true;
                }
            }
            ',' => match stack.last_mut() {
                Some(Frame::Object {
                    key, after_colon, ..
                }) => {
                    *key = None;
                    *after_colon = false;
                }
                Some(Frame::Array { index, .. }) => *index += 1,
                None => {}
            },
            '"' => {
                let string_line = line;
                let mut end = start + 1;
                let mut escaped = false;
                for (i, c) in chars.by_ref() {
                    end = i + c.len_utf8();
                    if c == '\n' {
                        line += 1;
                    }
                    if escaped {
                        escaped = false;
                    } else if c == '\\' {
                        escaped = true;
                    } else if c == '"' {
                        break;
                    }
                }
                match slot(&stack) {
                    Some(path) => {
                        lines.insert(path, string_line);
                    }
                    None => {
                        let raw = text.get(start..end).unwrap_or("");
                        let key = serde_json::from_str::<String>(raw)
                            .unwrap_or_else(|_| raw.trim_matches('"').to_string());
                        if let Some(Frame::Object { key: k, .. }) = stack.last_mut() {
                            *k = Some(key);
                        }
                    }
                }
            }
            _ => {
                // A number, true, false or null.
                if let Some(path) = slot(&stack) {
                    lines.insert(path, line);
                }
                while let Some((_, next)) = chars.peek() {
                    if matches!(next, ',' | '}' | ']') || next.is_whitespace() {
                        break;
                    }
                    chars.next();
                }
            }
        }
    }
    lines
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
                (got != *expected)
                    .then(|| format!("{input:?}:\n  expected {expected:?}\n  got      {got:?}"))
            })
            .collect();
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    fn file_share(path: &str, site: &str, lib: &str, sub: Option<&str>) -> TaskSpec {
        TaskSpec {
            source: Source::FileShare { path: path.into() },
            destination: Destination {
                site_url: site.into(),
                library: Some(lib.into()),
                subfolder: sub.map(Into::into),
            },
            structure: SiteStructure::KeepClassic,
            subsite_destinations: Default::default(),
        }
    }

    fn sharepoint(
        site: &str,
        lib: Option<&str>,
        sub: Option<&str>,
        target: &str,
        target_lib: Option<&str>,
        target_sub: Option<&str>,
    ) -> TaskSpec {
        TaskSpec {
            source: Source::SharePointServer {
                site_url: site.into(),
                library: lib.map(Into::into),
                subfolder: sub.map(Into::into),
            },
            destination: Destination {
                site_url: target.into(),
                library: target_lib.map(Into::into),
                subfolder: target_sub.map(Into::into),
            },
            structure: SiteStructure::KeepClassic,
            subsite_destinations: Default::default(),
        }
    }

    fn with_hub(mut t: TaskSpec, hub: HubChoice) -> TaskSpec {
        t.structure = SiteStructure::SwitchToModern { hub };
        t
    }

    const SPO: &str = "https://contoso.sharepoint.com/sites/Sample";

    /// (tasks, number of warnings) or (line, field) of the error.
    type Outcome = Result<(Vec<TaskSpec>, usize), (Option<usize>, Option<String>)>;

    fn outcome(r: Result<BulkTasks, BulkError>) -> Outcome {
        r.map(|b| (b.tasks, b.warnings.len()))
            .map_err(|e| (e.line, e.field))
    }

    fn at(line: usize, column: usize) -> Outcome {
        Err((
            Some(line),
            Some(format!("column {column} ({})", CSV_COLUMNS[column - 1])),
        ))
    }

    fn at_line(line: usize) -> Outcome {
        Err((Some(line), None))
    }

    #[test]
    fn csv_rows() {
        let fs = |p: &str| file_share(p, SPO, "Documents", None);
        let rows: Vec<(&str, Outcome)> = vec![
            // Microsoft's example, 6 columns (one warning for the old format).
            (
                "C:\\MigrationTests\\testfiles,,,https://contoso.sharepoint.com/sites/Sample/,DocLibraryName,DocLibraryName_subfolder\n\
                 https://sharepoint2013.com/sites/contosoteamsite/,DocumentLibraryName,DocLibrarySubfolder_name,https://contoso.sharepoint.com/sites/Sample/,DocLibraryName,DocLibraryName_subfolder\n\
                 \\\\sharedfolder\\homedrives\\meganb,,,https://contoso-my.sharepoint.com/personal/meganb_contoso_com/,DocLibraryName,DocLibraryName_subfolder\n",
                Ok((
                    vec![
                        file_share("C:\\MigrationTests\\testfiles", SPO, "DocLibraryName", Some("DocLibraryName_subfolder")),
                        sharepoint(
                            "https://sharepoint2013.com/sites/contosoteamsite",
                            Some("DocumentLibraryName"),
                            Some("DocLibrarySubfolder_name"),
                            SPO,
                            Some("DocLibraryName"),
                            Some("DocLibraryName_subfolder"),
                        ),
                        file_share(
                            "\\\\sharedfolder\\homedrives\\meganb",
                            "https://contoso-my.sharepoint.com/personal/meganb_contoso_com",
                            "DocLibraryName",
                            Some("DocLibraryName_subfolder"),
                        ),
                    ],
                    1,
                )),
            ),
            // 8 columns, every source shape.
            (
                "\\\\srv\\share,,,https://contoso.sharepoint.com/sites/Sample,Documents,,,\n\
                 //srv/share,,,https://contoso.sharepoint.com/sites/Sample,Documents,,,\n\
                 D:/data,,,https://contoso.sharepoint.com/sites/Sample,Documents,,,\n\
                 /mnt/share,,,https://contoso.sharepoint.com/sites/Sample,Documents,,,\n",
                Ok((vec![fs("\\\\srv\\share"), fs("//srv/share"), fs("D:/data"), fs("/mnt/share")], 0)),
            ),
            // BOM, CRLF, blank and whitespace-only lines, all-empty rows, trimming.
            (
                "\u{feff}\r\n  \r\n\\\\srv\\a ,  , ,  https://contoso.sharepoint.com/sites/Sample/ , Documents ,/x/y/,,\r\n,,,,,,,\r\n\r\n",
                Ok((vec![file_share("\\\\srv\\a", SPO, "Documents", Some("x/y"))], 0)),
            ),
            // Quotes: commas and doubled quotes inside values.
            (
                "\"\\\\srv\\a,b\",,,https://contoso.sharepoint.com/sites/Sample,\"Doc \"\"Lib\"\"\",\"c,d\",,",
                Ok((vec![file_share("\\\\srv\\a,b", SPO, "Doc \"Lib\"", Some("c,d"))], 0)),
            ),
            // Whole site: target library/subfolder ignored with a warning each.
            (
                "https://intranet/sites/hr,,,https://contoso.sharepoint.com/sites/Sample,Documents,sub,,",
                Ok((vec![sharepoint("https://intranet/sites/hr", None, None, SPO, None, None)], 2)),
            ),
            (
                "http://intranet,,,https://contoso.sharepoint.com/sites/Sample,,,,",
                Ok((vec![sharepoint("http://intranet", None, None, SPO, None, None)], 0)),
            ),
            // Hubs.
            (
                "https://intranet/sites/hr,Documents,,https://contoso.sharepoint.com/sites/Sample,Documents,,HR Hub,",
                Ok((
                    vec![with_hub(
                        sharepoint("https://intranet/sites/hr", Some("Documents"), None, SPO, Some("Documents"), None),
                        HubChoice::RegisterDestination,
                    )],
                    1,
                )),
            ),
            (
                "https://intranet/sites/hr,Documents,,https://contoso.sharepoint.com/sites/Sample,Documents,,TRUE,",
                Ok((
                    vec![with_hub(
                        sharepoint("https://intranet/sites/hr", Some("Documents"), None, SPO, Some("Documents"), None),
                        HubChoice::RegisterDestination,
                    )],
                    0,
                )),
            ),
            (
                "https://intranet/sites/hr,Documents,,https://contoso.sharepoint.com/sites/Sample,Documents,,false,",
                Ok((
                    vec![sharepoint("https://intranet/sites/hr", Some("Documents"), None, SPO, Some("Documents"), None)],
                    0,
                )),
            ),
            (
                "https://intranet/sites/hr,Documents,,https://contoso.sharepoint.com/sites/Sample,Documents,,,https://contoso.sharepoint.com/sites/hub/",
                Ok((
                    vec![with_hub(
                        sharepoint("https://intranet/sites/hr", Some("Documents"), None, SPO, Some("Documents"), None),
                        HubChoice::JoinExisting { hub: "https://contoso.sharepoint.com/sites/hub".into() },
                    )],
                    0,
                )),
            ),
            // A header row is skipped with a warning.
            (
                "Source,Source DocLib,Source SubFolder,Target Web,Target DocLib,Target SubFolder,RegisterAsHubSite,AssociateWithHubURL\n\\\\srv\\a,,,https://contoso.sharepoint.com/sites/Sample,Documents,,,",
                Ok((vec![fs("\\\\srv\\a")], 1)),
            ),
            (
                "Source,SourceDocLib,SourceSubFolder,TargetWeb,TargetDocLib,TargetSubFolder\n\\\\srv\\a,,,https://contoso.sharepoint.com/sites/Sample,Documents,",
                Ok((vec![fs("\\\\srv\\a")], 2)),
            ),
            // Errors: where, exactly.
            ("", Err((None, None))),
            ("\u{feff}\r\n\r\n   \r\n", Err((None, None))),
            ("Source,,,Target Web,,,,", Err((None, None))),
            (
                "\\\\srv\\a,,,https://x/sites/a,Documents,,,\n\n\\\\srv\\b,,,https://x/sites/a,Documents,,\n",
                at_line(3),
            ),
            ("\r\n\r\n\\\\srv\\b,,,https://x/sites/a,Documents,,,,\r\n", at_line(3)),
            ("\\\\srv\\b,,,https://x/sites/a,Documents\n", at_line(1)),
            ("\\\\srv\\b;;;https://x/sites/a;Documents;;;\n", at_line(1)),
            // An unclosed quote swallows the line break.
            ("\"\\\\srv\\b,,,https://x/sites/a,Documents,,,\n\\\\srv\\c,,,https://x/sites/a,Documents,,,\n", at(1, 1)),
            (",,,https://x/sites/a,Documents,,,", at(1, 1)),
            ("srv\\share,,,https://x/sites/a,Documents,,,", at(1, 1)),
            ("ftp://srv/share,,,https://x/sites/a,Documents,,,", at(1, 1)),
            ("\n\n\\\\srv\\a,,,,Documents,,,", at(3, 4)),
            ("\\\\srv\\a,,,\"ftp://x\",Documents,,,", at(1, 4)),
            ("\\\\srv\\a,,,contoso.sharepoint.com/sites/a,Documents,,,", at(1, 4)),
            ("\\\\srv\\a,,,https:///sites/a,Documents,,,", at(1, 4)),
            ("\\\\srv\\a,,,https://x/sites/a,,,,", at(1, 5)),
            ("https://intranet,Documents,,https://x/sites/a,,,,", at(1, 5)),
            ("\\\\srv\\a,Documents,,https://x/sites/a,Documents,,,", at(1, 2)),
            ("\\\\srv\\a,,folder,https://x/sites/a,Documents,,,", at(1, 3)),
            ("https://intranet,,folder,https://x/sites/a,Documents,,,", at(1, 3)),
            ("\\\\srv\\a,,,https://x/sites/a,Documents,,TRUE,", at(1, 7)),
            ("\\\\srv\\a,,,https://x/sites/a,Documents,,,https://x/sites/hub", at(1, 8)),
            ("https://intranet,Documents,,https://x/sites/a,Documents,,Hub,https://x/sites/hub", at(1, 8)),
            ("https://intranet,Documents,,https://x/sites/a,Documents,,,hub", at(1, 8)),
        ];
        check(|text: &&str| outcome(parse_csv("tasks.csv", text)), &rows);
    }

    #[test]
    fn error_messages_read_well() {
        let rows: Vec<((&str, &str), String)> = vec![
            (
                ("tasks.csv", "\\\\srv\\a,,,https://x/sites/a,Documents,,,\n\n\\\\srv\\b,,,ftp://x,Documents,,,"),
                "tasks.csv line 3, column 4 (Target Web): \"ftp://x\" is not an http(s) URL: the destination must be a SharePoint Online site URL, e.g. https://contoso.sharepoint.com/sites/hr".into(),
            ),
            (
                ("tasks.csv", "\\\\srv\\b,,,https://x/sites/a,Documents,,,,"),
                format!("tasks.csv line 1: the row has 9 columns but a task row has 8 ({}), or 6 in SPMT's older format without the hub columns: keep every comma, even for empty values, and quote values that contain commas", CSV_COLUMNS.join(", ")),
            ),
            (
                ("tasks.csv", ""),
                format!("tasks.csv: no tasks: add one row per task with the columns {}", CSV_COLUMNS.join(", ")),
            ),
            (
                ("tasks.json", "{\"Tasks\": []}"),
                "tasks.json line 1, Tasks: no tasks: add at least one {\"SourcePath\": …, \"TargetPath\": …} to the array".into(),
            ),
            (
                ("t.json", "{\n \"Tasks\": [\n  {\"SourcePath\": \"\\\\\\\\srv\\\\a\", \"TargetPath\": \"https://x\"}\n ]\n}"),
                "t.json line 3, Tasks[0].TargetList: TargetList is missing or empty: name the destination document library, e.g. \"Documents\"".into(),
            ),
        ];
        check(
            |(name, text): &(&str, &str)| match parse(name, text) {
                Ok(_) => "parsed".to_string(),
                Err(e) => e.to_string(),
            },
            &rows,
        );
        let e = parse_csv("a.csv", "\\\\srv\\b;;;https://x/sites/a;Documents;;;").unwrap_err();
        assert!(e.problem.contains("semicolons"), "{e}");
        let e = parse_csv(
            "a.csv",
            "{\"Tasks\": [{\"SourcePath\": \"/a\", \"TargetPath\": \"https://x\"}]}",
        )
        .unwrap_err();
        assert!(e.problem.contains(".json"), "{e}");
        let e = parse_json("a.json", "{\"Tasks\": [{\"SourcePath\": \"C:\\data\"}]}").unwrap_err();
        assert!(e.problem.contains("doubled"), "{e}");
        assert_eq!(ProtoError::from(e.clone()).to_string(), e.to_string());
    }

    use crate::ProtoError;

    const DOC_EXAMPLE: &str = r#"{
  "Tasks": [
    {
      "SourcePath": "D:\\MigTest",
      "TargetPath": "https://a830edad9050849387E18042320.sharepoint.com",
      "TargetList": "Documents",
      "TargetListRelativePath": "subfolder"
    },
    {
      "SourcePath": "http://EXHB-1873",
      "TargetPath": "https://a830edad9050849387E18042320.sharepoint.com",
      "Items": {
        "Lists": [
          {
            "SourceList": "versionList",
            "TargetList": "NewVersionList"
          }
        ],
        "SubSites": []
      }
    },
    {
      "SourcePath": "http://EXHB-1873",
      "TargetPath": "https://a830edad9050849387E18042320.sharepoint.com",
      "Items": {
        "Lists": [
          {
            "SourceList": "listVersion2",
            "TargetList": "ListVersion2"
          },
          {
            "SourceList": "listVersion3",
            "TargetList": "ListVersion3"
          }
        ],
        "SubSites": [
          {
            "SourceSubSitePath": "subSite",
            "TargetSubSitePath": "targetSubSite",
            "Lists": [
              {
                "SourceList": "testSubListB",
                "TargetList": "TargetSubList"
              }
            ]
          }
        ]
      }
    },
    {
      "SourcePath": "http://EXHB-1873/subsite2",
      "TargetPath": "https://a830edad9050849387E18042320.sharepoint.com/targetSubSite2"
    }
  ]
}"#;

    #[test]
    fn json_documented_example() {
        let t = "https://a830edad9050849387E18042320.sharepoint.com";
        let s = "http://EXHB-1873";
        let parsed = parse("tasks.json", DOC_EXAMPLE).unwrap();
        assert_eq!(parsed.warnings, Vec::<String>::new());
        assert_eq!(
            parsed.tasks,
            vec![
                file_share("D:\\MigTest", t, "Documents", Some("subfolder")),
                sharepoint(
                    s,
                    Some("versionList"),
                    None,
                    t,
                    Some("NewVersionList"),
                    None
                ),
                sharepoint(s, Some("listVersion2"), None, t, Some("ListVersion2"), None),
                sharepoint(s, Some("listVersion3"), None, t, Some("ListVersion3"), None),
                sharepoint(
                    "http://EXHB-1873/subSite",
                    Some("testSubListB"),
                    None,
                    &format!("{t}/targetSubSite"),
                    Some("TargetSubList"),
                    None
                ),
                sharepoint(
                    "http://EXHB-1873/subsite2",
                    None,
                    None,
                    &format!("{t}/targetSubSite2"),
                    None,
                    None
                ),
            ]
        );
    }

    fn json_err(line: usize, field: &str) -> Outcome {
        Err((Some(line), Some(field.to_string())))
    }

    #[test]
    fn json_cases() {
        let x = "https://x/sites/a";
        let rows: Vec<(&str, Outcome)> = vec![
            // Add-SPMTTask's example with task-level Settings: warned, ignored.
            (
                "{\"Tasks\":[{\"SourcePath\":\"https://onprem/sites/a\",\"TargetPath\":\"https://x/sites/a\",\n\"Items\":{\"Lists\":[{\"SourceList\":\"S\",\"TargetList\":\"T\"}],\"SubSites\":[]},\n\"Settings\":{\"MigrateFileVersionHistory\":true,\"CustomAzureStorageAccount\":null}}]}",
                Ok((vec![sharepoint("https://onprem/sites/a", Some("S"), None, x, Some("T"), None)], 1)),
            ),
            // Keys in any case; BOM; optional relative paths on lists.
            (
                "\u{feff}{\"tasks\":[{\"sourcepath\":\"https://onprem\",\"TARGETPATH\":\"https://x/sites/a/\",\"items\":{\"lists\":[{\"sourcelist\":\"S\",\"targetlist\":\"T\",\"SourceListRelativePath\":\"/f/g/\",\"TargetListRelativePath\":\"h\"}]}}]}",
                Ok((vec![sharepoint("https://onprem", Some("S"), Some("f/g"), x, Some("T"), Some("h"))], 0)),
            ),
            // Task-level SourceList (Add-SPMTTask's parameters).
            (
                "{\"Tasks\":[{\"SourcePath\":\"https://onprem\",\"SourceList\":\"S\",\"SourceListRelativePath\":\"f\",\"TargetPath\":\"https://x/sites/a\",\"TargetList\":\"T\"}]}",
                Ok((vec![sharepoint("https://onprem", Some("S"), Some("f"), x, Some("T"), None)], 0)),
            ),
            // Unknown keys warn (one each), nulls are absent values.
            (
                "{\"Version\":2,\"Tasks\":[{\"SourcePath\":\"/mnt/a\",\"TargetPath\":\"https://x/sites/a\",\"TargetList\":\"Documents\",\"TargetListRelativePath\":null,\"Colour\":\"red\"}]}",
                Ok((vec![file_share("/mnt/a", x, "Documents", None)], 2)),
            ),
            // Nested subsites, an absolute subsite URL, a subsite with no lists.
            (
                "{\"Tasks\":[{\"SourcePath\":\"https://onprem\",\"TargetPath\":\"https://x/sites/a\",\"Items\":{\"SubSites\":[{\"SourceSubSitePath\":\"/one/\",\"TargetSubSitePath\":\"https://x/sites/one\",\"SubSites\":[{\"SourceSubSitePath\":\"two\",\"TargetSubSitePath\":\"deux\"}]}]}}]}",
                Ok((vec![sharepoint("https://onprem/one/two", None, None, "https://x/sites/one/deux", None, None)], 0)),
            ),
            // Whole site with a TargetList: warned, ignored.
            (
                "{\"Tasks\":[{\"SourcePath\":\"https://onprem\",\"TargetPath\":\"https://x/sites/a\",\"TargetList\":\"Documents\"}]}",
                Ok((vec![sharepoint("https://onprem", None, None, x, None, None)], 1)),
            ),
            // Syntax errors: line and column from serde_json.
            ("", Err((None, None))),
            ("\u{feff} \r\n", Err((None, None))),
            ("{\"Tasks\": [", json_err(1, "column 11")),
            ("{\"Tasks\": [\n  {\"SourcePath\": \"/a\"\n   \"TargetPath\": \"https://x\"}\n]}", json_err(3, "column 4")),
            ("{\"Tasks\": [{\"SourcePath\": \"C:\\data\"}]}", json_err(1, "column 31")),
            ("{\"Tasks\": [}", json_err(1, "column 12")),
            ("{\"Tasks\": []}\n,", json_err(2, "column 1")),
            // Structure errors: line of the value, path of the field.
            ("[1]", Err((Some(1), None))),
            ("{}", json_err(1, "Tasks")),
            ("{\"SourcePath\":\"/a\",\"TargetPath\":\"https://x\"}", json_err(1, "Tasks")),
            ("{\n\"Tasks\": {}}", json_err(2, "Tasks")),
            ("{\n\n\"Tasks\": []}", json_err(3, "Tasks")),
            ("{\"Tasks\": [\n  5\n]}", json_err(2, "Tasks[0]")),
            (
                "{\"Tasks\": [\n {\"SourcePath\":\"/a\",\"TargetPath\":\"https://x\",\"TargetList\":\"D\"},\n {\"TargetPath\":\"https://x\"}\n]}",
                json_err(3, "Tasks[1].SourcePath"),
            ),
            (
                "{\"Tasks\": [\n {\"SourcePath\":\"/a\",\n  \"TargetPath\":\n    5}]}",
                json_err(4, "Tasks[0].TargetPath"),
            ),
            (
                "{\"Tasks\": [{\"SourcePath\":\"/a\",\n\"TargetPath\":\"ftp://x\"}]}",
                json_err(2, "Tasks[0].TargetPath"),
            ),
            (
                "{\"Tasks\": [{\"SourcePath\":\"/a\",\n\"TargetPath\":\"  \"}]}",
                json_err(1, "Tasks[0].TargetPath"),
            ),
            (
                "{\"Tasks\": [{\n\"SourcePath\":\"relative\\\\dir\",\"TargetPath\":\"https://x\"}]}",
                json_err(2, "Tasks[0].SourcePath"),
            ),
            (
                "{\"Tasks\": [{\n\"SourcePath\":\"ftp://x\",\"TargetPath\":\"https://x\"}]}",
                json_err(2, "Tasks[0].SourcePath"),
            ),
            (
                "{\"Tasks\": [{\"SourcePath\":\"/a\",\"TargetPath\":\"https://x\",\n\"Items\":{\"Lists\":[]},\"TargetList\":\"D\"}]}",
                json_err(2, "Tasks[0].Items"),
            ),
            (
                "{\"Tasks\": [{\"SourcePath\":\"https://o\",\"TargetPath\":\"https://x\",\n\"Items\":{\"Lists\":[],\"SubSites\":[]}}]}",
                json_err(2, "Tasks[0].Items"),
            ),
            (
                "{\"Tasks\": [{\"SourcePath\":\"https://o\",\"TargetPath\":\"https://x\",\n\"Items\":[]}]}",
                json_err(2, "Tasks[0].Items"),
            ),
            (
                "{\"Tasks\": [{\"SourcePath\":\"https://o\",\"TargetPath\":\"https://x\",\"Items\":{\n\"Lists\":{}}}]}",
                json_err(2, "Tasks[0].Items.Lists"),
            ),
            (
                "{\"Tasks\": [{\"SourcePath\":\"https://o\",\"TargetPath\":\"https://x\",\"Items\":{\"Lists\":[\n{\"TargetList\":\"T\"}]}}]}",
                json_err(2, "Tasks[0].Items.Lists[0].SourceList"),
            ),
            (
                "{\"Tasks\": [{\"SourcePath\":\"https://o\",\"TargetPath\":\"https://x\",\"Items\":{\"Lists\":[\n{\"SourceList\":\"S\",\n\"TargetList\":[\"T\"]}]}}]}",
                json_err(3, "Tasks[0].Items.Lists[0].TargetList"),
            ),
            (
                "{\"Tasks\": [{\"SourcePath\":\"https://o\",\"TargetPath\":\"https://x\",\"Items\":{\"SubSites\":[\n{\"SourceSubSitePath\":\"a\"}]}}]}",
                json_err(2, "Tasks[0].Items.SubSites[0].TargetSubSitePath"),
            ),
            (
                "{\"Tasks\": [{\"SourcePath\":\"https://o\",\"TargetPath\":\"https://x\",\"Items\":{\"SubSites\":[{\"SourceSubSitePath\":\"a\",\n\"TargetSubSitePath\":\"ftp://b\"}]}}]}",
                json_err(2, "Tasks[0].Items.SubSites[0].TargetSubSitePath"),
            ),
            (
                "{\"Tasks\": [{\"SourcePath\":\"https://o\",\"SourceList\":\"S\",\"TargetPath\":\"https://x\"}]}",
                json_err(1, "Tasks[0].TargetList"),
            ),
            (
                "{\"Tasks\": [{\"SourcePath\":\"https://o\",\"SourceList\":\"S\",\"TargetList\":\"T\",\"TargetPath\":\"https://x\",\n\"Items\":{}}]}",
                json_err(2, "Tasks[0].Items"),
            ),
            (
                "{\"Tasks\": [{\"SourcePath\":\"https://o\",\n\"SourceListRelativePath\":\"f\",\"TargetPath\":\"https://x\"}]}",
                json_err(2, "Tasks[0].SourceListRelativePath"),
            ),
            // An escaped key still finds its line.
            (
                "{\"Tasks\": [{\"Source\\u0050ath\":\"/a\",\n\"TargetPath\":\"https://x\",\n\"Target\\u004cist\":\n7}]}",
                json_err(4, "Tasks[0].TargetList"),
            ),
        ];
        check(|text: &&str| outcome(parse_json("tasks.json", text)), &rows);
    }

    #[test]
    fn warnings_are_located() {
        let text = "{\"Tasks\":[{\"SourcePath\":\"/mnt/a\",\"TargetPath\":\"https://x/sites/a\",\"TargetList\":\"D\",\n\"Colour\":\"red\"}]}";
        let parsed = parse_json("t.json", text).unwrap();
        assert_eq!(
            parsed.warnings,
            vec![format!(
                "t.json line 2, Tasks[0].Colour: unknown key \"Colour\" ignored (known here: {})",
                TASK_KEYS.join(", ")
            )]
        );
        let parsed =
            parse_csv("t.csv", "\nhttps://onprem,D,,https://x/sites/a,D,,HR Hub,").unwrap();
        assert_eq!(parsed.warnings.len(), 1);
        assert!(
            parsed.warnings[0].starts_with("t.csv line 2, column 7 (RegisterAsHubSite): "),
            "{:?}",
            parsed.warnings
        );
    }

    #[test]
    fn format_is_chosen_by_extension_then_content() {
        let csv = "\\\\srv\\a,,,https://x/sites/a,Documents,,,";
        let json = "{\"Tasks\":[{\"SourcePath\":\"/a\",\"TargetPath\":\"https://x\",\"TargetList\":\"D\"}]}";
        type Row<'a> = ((&'a str, &'a str), Result<usize, Option<String>>);
        let rows: Vec<Row> = vec![
            (("tasks.csv", csv), Ok(1)),
            (("TASKS.CSV", csv), Ok(1)),
            (("tasks.json", json), Ok(1)),
            (("Tasks.Json", json), Ok(1)),
            (("tasks.txt", json), Ok(1)),
            (("tasks.txt", csv), Ok(1)),
            (
                ("tasks", "\u{feff}  \n{\"Tasks\":[]}"),
                Err(Some("Tasks".into())),
            ),
            // A JSON body in a .csv file is read as CSV and fails as CSV.
            (("tasks.csv", json), Err(None)),
        ];
        check(
            |(name, text): &(&str, &str)| {
                parse(name, text)
                    .map(|b| b.tasks.len())
                    .map_err(|e| e.field)
            },
            &rows,
        );
    }

    #[test]
    fn value_lines_track_paths() {
        let text = "{\n\"a\": [1,\n 2, {\"b\":\n null}],\n\"c\\\"d\": \"x\\\"y\",\n\"e\": {}\n}";
        let lines = value_lines(text);
        let rows: Vec<(&str, Option<usize>)> = vec![
            ("", Some(1)),
            ("a", Some(2)),
            ("a[0]", Some(2)),
            ("a[1]", Some(3)),
            ("a[2]", Some(3)),
            ("a[2].b", Some(4)),
            ("c\"d", Some(5)),
            ("e", Some(6)),
            ("f", None),
        ];
        check(|p: &&str| lines.get(*p).copied(), &rows);
    }
}

#[cfg(test)]
mod no_panic {
    use super::*;

    /// Every prefix of valid files, and every single-byte corruption of them,
    /// parses to tasks or to a located error — never a panic.
    #[test]
    fn truncated_and_corrupted_inputs_do_not_panic() {
        let csv = "\u{feff}\"\\\\srv\\a,b\",,,https://x/sites/a,\"Doc \"\"L\"\"\",é,,\r\n\r\nhttps://onprem,D,f,https://x/sites/a,D,,Hub,\n";
        let json = tests_support::DOC;
        for (name, text) in [("t.csv", csv), ("t.json", json), ("t", csv), ("t", json)] {
            for (i, _) in text.char_indices() {
                let _ = parse(name, &text[..i]);
                for junk in ["\"", ",", "\n", "{", "]", "\\", "é"] {
                    let mut s = text.to_string();
                    s.insert_str(i, junk);
                    if let Err(e) = parse(name, &s) {
                        assert!(e.to_string().starts_with(name), "{e}");
                    }
                }
            }
        }
    }

    mod tests_support {
        pub const DOC: &str = r#"{"Tasks":[{"SourcePath":"D:\\MigTest","TargetPath":"https://a.sharepoint.com","TargetList":"Documents","TargetListRelativePath":"subfolder"},
{"SourcePath":"http://EXHB-1873","TargetPath":"https://a.sharepoint.com","Items":{"Lists":[{"SourceList":"l2","TargetList":"L2"}],
"SubSites":[{"SourceSubSitePath":"subSite","TargetSubSitePath":"t","Lists":[{"SourceList":"b","TargetList":"B"}]}]},"Settings":{"X":null}}]}"#;
    }
}
