//! Reports in SPMT's shapes, per job and per round: `SummaryReport_R{n}.csv`,
//! `ItemReport_R{n}.csv`, `FailureSummary_R{n}.csv`, plus `report_R{n}.json`
//! with the same facts for scripts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ferry_proto::{ItemKind, Outcome, SkipReason};
use ferry_store::state::ItemRecord;
use serde::Serialize;

/// The item columns SPMT's item and failure reports use.
pub const ITEM_COLUMNS: [&str; 9] = [
    "Source",
    "Destination",
    "Item name",
    "Extension",
    "Item size (bytes)",
    "Status",
    "Result category",
    "Message",
    "Error code",
];

pub const SUMMARY_COLUMNS: [&str; 9] = [
    "Source",
    "Destination",
    "Status",
    "Total scanned items",
    "Migrated items",
    "Skipped items",
    "Failed items",
    "Migrated bytes",
    "Throttled waits",
];

/// Totals of one library (one chunk group) or of the whole round.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    pub scanned: u64,
    pub copied: u64,
    pub skipped: u64,
    pub failed: u64,
    pub copied_bytes: u64,
    /// Skips by reason, e.g. `unchanged: 12`.
    pub skipped_by_reason: BTreeMap<String, u64>,
}

impl Totals {
    fn add(&mut self, item: &ItemRecord) {
        self.scanned += 1;
        match &item.outcome.outcome {
            Outcome::Copied => {
                self.copied += 1;
                self.copied_bytes += item.outcome.size;
            }
            Outcome::Skipped { reason } => {
                self.skipped += 1;
                *self
                    .skipped_by_reason
                    .entry(reason_key(*reason))
                    .or_default() += 1;
            }
            Outcome::Failed { .. } => self.failed += 1,
        }
    }
}

fn reason_key(reason: SkipReason) -> String {
    serde_json::to_value(reason)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// One library's line of the summary.
#[derive(Debug, Clone, Serialize)]
pub struct LibrarySummary {
    pub source: String,
    pub destination: String,
    /// `Completed`, `Completed with failures`, `Incomplete` (chunks left).
    pub status: String,
    pub totals: Totals,
}

/// Everything a round's reports say.
#[derive(Debug, Clone, Serialize)]
pub struct RoundReport {
    pub job: String,
    pub job_name: String,
    pub round: u32,
    pub libraries: Vec<LibrarySummary>,
    pub totals: Totals,
    pub throttled_waits: u64,
    pub throttled_ms: u64,
    /// Sites, subsites, libraries and hub work (SPMT's StructureReport).
    pub structure: Vec<StructureLine>,
    pub items: Vec<ItemLine>,
}

pub const STRUCTURE_COLUMNS: [&str; 6] =
    ["Source", "Destination", "Type", "Name", "Status", "Message"];

/// One line of the structure report.
#[derive(Debug, Clone, Serialize)]
pub struct StructureLine {
    pub source: String,
    pub destination: String,
    /// `Site`, `Library`, `Hub registration`, `Hub membership`.
    pub kind: &'static str,
    pub name: String,
    /// `Created`, `Already exists`, `Failed`.
    pub status: &'static str,
    pub message: String,
}

impl StructureLine {
    pub fn from_record(item: &ItemRecord) -> Self {
        // Keys: `s{site}`, `s{site}/library{n}`, `hub-register{site}`, `hub-join{site}`.
        let kind = if item.key.starts_with("hub-register") {
            "Hub registration"
        } else if item.key.starts_with("hub-join") {
            "Hub membership"
        } else if item.key.contains("/library") {
            "Library"
        } else {
            "Site"
        };
        let (status, message) = match &item.outcome.outcome {
            Outcome::Copied => ("Created", String::new()),
            Outcome::Skipped { .. } => ("Already exists", String::new()),
            Outcome::Failed { message, .. } => ("Failed", message.clone()),
        };
        StructureLine {
            source: item.outcome.source.clone(),
            destination: item.outcome.destination.clone(),
            kind,
            name: item.outcome.name.clone(),
            status,
            message,
        }
    }

    fn row(&self) -> [String; 6] {
        [
            self.source.clone(),
            self.destination.clone(),
            self.kind.to_string(),
            self.name.clone(),
            self.status.to_string(),
            self.message.clone(),
        ]
    }
}

/// One item, as the item report shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ItemLine {
    pub source: String,
    pub destination: String,
    pub name: String,
    pub extension: String,
    pub size: u64,
    pub kind: ItemKind,
    pub status: &'static str,
    pub result_category: String,
    pub message: String,
    pub error_code: String,
}

impl ItemLine {
    pub fn from_record(item: &ItemRecord) -> Self {
        let o = &item.outcome;
        let extension = match o.kind {
            ItemKind::Folder => String::new(),
            ItemKind::File => o
                .name
                .rsplit_once('.')
                .map(|(_, e)| e.to_string())
                .unwrap_or_default(),
        };
        let (status, result_category, message, error_code) = match &o.outcome {
            Outcome::Copied => ("Migrated", String::new(), String::new(), String::new()),
            Outcome::Skipped { reason } => (
                "Skipped",
                reason_key(*reason).to_uppercase(),
                reason.message().to_string(),
                String::new(),
            ),
            Outcome::Failed {
                category,
                message,
                code,
            } => (
                "Failed",
                serde_json::to_value(category)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_uppercase))
                    .unwrap_or_default(),
                message.clone(),
                code.clone(),
            ),
        };
        ItemLine {
            source: o.source.clone(),
            destination: o.destination.clone(),
            name: o.name.clone(),
            extension,
            size: o.size,
            kind: o.kind,
            status,
            result_category,
            message,
            error_code,
        }
    }

    fn row(&self) -> [String; 9] {
        [
            self.source.clone(),
            self.destination.clone(),
            self.name.clone(),
            self.extension.clone(),
            self.size.to_string(),
            self.status.to_string(),
            self.result_category.clone(),
            self.message.clone(),
            self.error_code.clone(),
        ]
    }
}

fn csv_bytes<const N: usize>(
    header: [&str; N],
    rows: impl Iterator<Item = [String; N]>,
) -> std::io::Result<Vec<u8>> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(header).map_err(std::io::Error::other)?;
    for row in rows {
        w.write_record(&row).map_err(std::io::Error::other)?;
    }
    w.into_inner()
        .map_err(|e| std::io::Error::other(e.to_string()))
}

impl RoundReport {
    /// Writes the four files into `dir` (created if needed) and returns their paths.
    pub fn write(&self, dir: &Path) -> std::io::Result<Vec<PathBuf>> {
        std::fs::create_dir_all(dir)?;
        let r = self.round;
        let summary = csv_bytes(
            SUMMARY_COLUMNS,
            self.libraries
                .iter()
                .map(|l| {
                    [
                        l.source.clone(),
                        l.destination.clone(),
                        l.status.clone(),
                        l.totals.scanned.to_string(),
                        l.totals.copied.to_string(),
                        l.totals.skipped.to_string(),
                        l.totals.failed.to_string(),
                        l.totals.copied_bytes.to_string(),
                        String::new(),
                    ]
                })
                .chain(std::iter::once([
                    "(all)".to_string(),
                    String::new(),
                    if self.totals.failed > 0 {
                        "Completed with failures"
                    } else {
                        "Completed"
                    }
                    .to_string(),
                    self.totals.scanned.to_string(),
                    self.totals.copied.to_string(),
                    self.totals.skipped.to_string(),
                    self.totals.failed.to_string(),
                    self.totals.copied_bytes.to_string(),
                    self.throttled_waits.to_string(),
                ])),
        )?;
        let items = csv_bytes(ITEM_COLUMNS, self.items.iter().map(ItemLine::row))?;
        let failures = csv_bytes(
            ITEM_COLUMNS,
            self.items
                .iter()
                .filter(|i| i.status == "Failed")
                .map(ItemLine::row),
        )?;
        let json = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        let mut files = vec![
            (format!("SummaryReport_R{r}.csv"), summary),
            (format!("ItemReport_R{r}.csv"), items),
            (format!("FailureSummary_R{r}.csv"), failures),
            (format!("report_R{r}.json"), json),
        ];
        if !self.structure.is_empty() {
            let all = csv_bytes(
                STRUCTURE_COLUMNS,
                self.structure.iter().map(StructureLine::row),
            )?;
            let failed = csv_bytes(
                STRUCTURE_COLUMNS,
                self.structure
                    .iter()
                    .filter(|l| l.status == "Failed")
                    .map(StructureLine::row),
            )?;
            files.push((format!("StructureReport_R{r}.csv"), all));
            files.push((format!("StructureFailureReport_R{r}.csv"), failed));
        }
        let mut paths = Vec::new();
        for (name, bytes) in files {
            let path = dir.join(name);
            // Write-then-rename: a report is either the old one or the new one.
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, bytes)?;
            std::fs::rename(&tmp, &path)?;
            paths.push(path);
        }
        Ok(paths)
    }
}

/// Builds the totals of a set of item records.
pub fn totals<'a>(items: impl Iterator<Item = &'a ItemRecord>) -> Totals {
    let mut t = Totals::default();
    for i in items {
        t.add(i);
    }
    t
}
