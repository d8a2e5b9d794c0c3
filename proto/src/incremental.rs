//! The incremental-migration decision: SPMT's table, as one pure function.
//!
//! | case                                             | result                    |
//! |--------------------------------------------------|---------------------------|
//! | source modified earlier than target modified     | not migrated              |
//! | file, folder or list already exists at target    | skipped during scan       |
//! | source newer than target                         | migrated                  |
//! | source is a file share                           | matched by path           |
//! | source is SharePoint Server                      | matched by list item GUID, folder path as fallback |
//!
//! Timestamps are compared to the whole second, because SharePoint keeps whole
//! seconds while file systems keep nanoseconds: a file migrated at 10:00:00.7
//! reads back as 10:00:00 and must count as unchanged.
//!
//! GUID matching means a file renamed or moved at the source is found again at
//! the destination through the job's GUID → destination-item map: the decision
//! then carries `relocate_from`, and the engine moves the destination item
//! instead of uploading a second copy.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::model::{ItemKind, SkipReason};

/// Which kind of source an item comes from; it decides how items are matched.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceSystem {
    FileShare,
    SharePointServer,
}

/// How the target item was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MatchBasis {
    Path,
    Guid,
}

/// What the engine knows about the source item.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceFacts<'a> {
    /// Path relative to the library (or share) root, `/`-separated, as it will
    /// be named at the destination.
    pub path: &'a str,
    pub kind: ItemKind,
    /// SharePoint Server list item `UniqueId`; `None` for file shares.
    pub unique_id: Option<Uuid>,
    pub modified: Option<DateTime<Utc>>,
}

/// What the engine knows about a destination item.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetFacts<'a> {
    /// Current path relative to the destination library root.
    pub path: &'a str,
    pub kind: ItemKind,
    pub modified: Option<DateTime<Utc>>,
}

/// Where the target candidates came from. The engine looks up both and lets
/// [`decide`] choose, so that the rule lives in one place.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Candidates<'a> {
    /// The destination item recorded for the source item's GUID in an earlier
    /// round (SharePoint Server sources only).
    pub by_guid: Option<TargetFacts<'a>>,
    /// The destination item at the source item's path, if any.
    pub by_path: Option<TargetFacts<'a>>,
}

/// Why an item is copied.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CopyReason {
    /// Nothing matches at the destination.
    New,
    /// The source is newer than the target's copy.
    SourceNewer,
    /// Incremental migration is off: everything is copied again.
    NotIncremental,
    /// A timestamp is missing on one side, so "unchanged" cannot be proven;
    /// copying is the choice that loses nothing.
    TimestampUnknown,
}

/// Why an item cannot be written.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Conflict {
    /// A file is to be written where the target has a folder, or the reverse.
    KindMismatch { target_path: String },
    /// The item migrated earlier (found by GUID) is to move to a path another
    /// target item already occupies. Nothing is overwritten or deleted.
    RelocationBlocked { from: String, to: String },
}

impl Conflict {
    pub fn message(&self) -> String {
        match self {
            Conflict::KindMismatch { target_path } => format!(
                "The target already has an item of the other kind (file/folder) at '{target_path}'. Rename or remove it at the target, then re-run."
            ),
            Conflict::RelocationBlocked { from, to } => format!(
                "The source item was renamed or moved; its earlier copy at '{from}' cannot move to '{to}' because another item is there. Rename or remove one of them at the target, then re-run."
            ),
        }
    }
}

/// What to do with the item.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    Copy { reason: CopyReason },
    Skip { reason: SkipReason },
    Fail { conflict: Conflict },
}

/// The decision for one item.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    pub action: Action,
    /// How the target was matched, if it was.
    pub matched_by: Option<MatchBasis>,
    /// Set when the item was found by GUID at another path: move the target
    /// item from this path to the source's path first (before any copy).
    pub relocate_from: Option<String>,
}

/// Whole-second comparison key (floor, so 10:00:00.999 is 10:00:00).
fn seconds(t: DateTime<Utc>) -> i64 {
    t.timestamp()
}

/// Decides what happens to one source item. Pure and total: every input has
/// an answer.
pub fn decide(
    incremental: bool,
    system: SourceSystem,
    source: &SourceFacts<'_>,
    candidates: &Candidates<'_>,
) -> Decision {
    // 1. Find the target. SharePoint Server: GUID first, path as the fallback.
    //    File share: path only (a GUID on a file-share item is ignored).
    let by_guid = match system {
        SourceSystem::SharePointServer if source.unique_id.is_some() => candidates
            .by_guid
            .as_ref()
            .filter(|t| t.kind == source.kind),
        _ => None,
    };
    let (target, matched_by, relocate_from) = match (by_guid, candidates.by_path.as_ref()) {
        (Some(g), by_path) if g.path != source.path => {
            if let Some(p) = by_path {
                return Decision {
                    action: Action::Fail {
                        conflict: Conflict::RelocationBlocked {
                            from: g.path.to_string(),
                            to: p.path.to_string(),
                        },
                    },
                    matched_by: Some(MatchBasis::Guid),
                    relocate_from: None,
                };
            }
            (Some(g), Some(MatchBasis::Guid), Some(g.path.to_string()))
        }
        (Some(g), _) => (Some(g), Some(MatchBasis::Guid), None),
        (None, Some(p)) => (Some(p), Some(MatchBasis::Path), None),
        (None, None) => (None, None, None),
    };

    let Some(target) = target else {
        return Decision {
            action: Action::Copy {
                reason: CopyReason::New,
            },
            matched_by: None,
            relocate_from: None,
        };
    };

    let action = if target.kind != source.kind {
        Action::Fail {
            conflict: Conflict::KindMismatch {
                target_path: target.path.to_string(),
            },
        }
    } else if source.kind == ItemKind::Folder {
        // Folders (and libraries) that exist are skipped during the scan, in
        // every mode: there is nothing to copy into an existing folder.
        Action::Skip {
            reason: SkipReason::AlreadyExists,
        }
    } else if !incremental {
        Action::Copy {
            reason: CopyReason::NotIncremental,
        }
    } else {
        match (source.modified, target.modified) {
            (Some(s), Some(t)) => match seconds(s).cmp(&seconds(t)) {
                std::cmp::Ordering::Greater => Action::Copy {
                    reason: CopyReason::SourceNewer,
                },
                std::cmp::Ordering::Equal => Action::Skip {
                    reason: SkipReason::Unchanged,
                },
                std::cmp::Ordering::Less => Action::Skip {
                    reason: SkipReason::TargetIsNewer,
                },
            },
            _ => Action::Copy {
                reason: CopyReason::TimestampUnknown,
            },
        }
    };
    Decision {
        action,
        matched_by,
        relocate_from,
    }
}

#[cfg(test)]
#[rustfmt::skip] // keep the decision table one row per line
mod tests {
    use super::*;
    use chrono::TimeZone;

    use ItemKind::{File, Folder};
    use SourceSystem::{FileShare, SharePointServer};

    fn t(s: &str) -> Option<DateTime<Utc>> {
        Some(DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc))
    }
    const G: Uuid = Uuid::from_u128(0x1234);

    fn copy(reason: CopyReason) -> Action {
        Action::Copy { reason }
    }
    fn skip(reason: SkipReason) -> Action {
        Action::Skip { reason }
    }

    /// One row: inputs, and the expected action / match / relocation.
    #[allow(clippy::too_many_arguments)]
    fn check(
        row: &str,
        incremental: bool,
        system: SourceSystem,
        source: SourceFacts<'_>,
        candidates: Candidates<'_>,
        action: Action,
        matched_by: Option<MatchBasis>,
        relocate_from: Option<&str>,
    ) {
        let got = decide(incremental, system, &source, &candidates);
        assert_eq!(
            got,
            Decision {
                action,
                matched_by,
                relocate_from: relocate_from.map(str::to_string)
            },
            "row: {row}"
        );
    }

    fn src<'a>(path: &'a str, kind: ItemKind, guid: Option<Uuid>, m: &str) -> SourceFacts<'a> {
        SourceFacts {
            path,
            kind,
            unique_id: guid,
            modified: if m.is_empty() { None } else { t(m) },
        }
    }
    fn tgt<'a>(path: &'a str, kind: ItemKind, m: &str) -> TargetFacts<'a> {
        TargetFacts {
            path,
            kind,
            modified: if m.is_empty() { None } else { t(m) },
        }
    }
    fn at_path(t: TargetFacts<'_>) -> Candidates<'_> {
        Candidates {
            by_guid: None,
            by_path: Some(t),
        }
    }
    fn at_guid(t: TargetFacts<'_>) -> Candidates<'_> {
        Candidates {
            by_guid: Some(t),
            by_path: None,
        }
    }

    const T0: &str = "2024-05-01T10:00:00Z";
    const T0_FRAC: &str = "2024-05-01T10:00:00.999Z";
    const T1: &str = "2024-05-01T10:00:01Z";
    const T_EARLY: &str = "2024-04-30T09:00:00Z";

    #[test]
    fn brief_table_rows() {
        use MatchBasis::{Guid, Path};
        // Row 1: source modified earlier than target → not migrated.
        check("earlier, share", true, FileShare, src("a.txt", File, None, T_EARLY),
            at_path(tgt("a.txt", File, T0)), skip(SkipReason::TargetIsNewer), Some(Path), None);
        check("earlier, sp", true, SharePointServer, src("a.txt", File, Some(G), T_EARLY),
            at_guid(tgt("a.txt", File, T0)), skip(SkipReason::TargetIsNewer), Some(Guid), None);
        // Row 2: exists at target (same time) → skipped; folders that exist → skipped.
        check("same time", true, FileShare, src("a.txt", File, None, T0),
            at_path(tgt("a.txt", File, T0)), skip(SkipReason::Unchanged), Some(Path), None);
        check("folder exists", true, FileShare, src("docs", Folder, None, T1),
            at_path(tgt("docs", Folder, T0)), skip(SkipReason::AlreadyExists), Some(Path), None);
        check("folder exists, sp guid", true, SharePointServer, src("docs", Folder, Some(G), T1),
            at_guid(tgt("docs", Folder, T0)), skip(SkipReason::AlreadyExists), Some(Guid), None);
        // Row 3: source newer → migrated.
        check("newer, share", true, FileShare, src("a.txt", File, None, T1),
            at_path(tgt("a.txt", File, T0)), copy(CopyReason::SourceNewer), Some(Path), None);
        check("newer, sp", true, SharePointServer, src("a.txt", File, Some(G), T1),
            at_guid(tgt("a.txt", File, T0)), copy(CopyReason::SourceNewer), Some(Guid), None);
        // Nothing at the target → migrated.
        check("new", true, FileShare, src("a.txt", File, None, T0),
            Candidates::default(), copy(CopyReason::New), None, None);
        check("new folder", true, SharePointServer, src("d", Folder, Some(G), T0),
            Candidates::default(), copy(CopyReason::New), None, None);
    }

    #[test]
    fn matching_basis() {
        use MatchBasis::{Guid, Path};
        // Row 4: file share → by path; a GUID candidate is ignored even if offered.
        check("share ignores guid", true, FileShare, src("b.txt", File, Some(G), T0),
            at_guid(tgt("a.txt", File, T0)), copy(CopyReason::New), None, None);
        // Row 5: SharePoint → by GUID first …
        check("guid beats path", true, SharePointServer, src("a.txt", File, Some(G), T0),
            Candidates { by_guid: Some(tgt("a.txt", File, T0)), by_path: Some(tgt("a.txt", File, T_EARLY)) },
            skip(SkipReason::Unchanged), Some(Guid), None);
        // … folder path as the fallback when the GUID is unknown to the map …
        check("path fallback", true, SharePointServer, src("a.txt", File, Some(G), T0),
            at_path(tgt("a.txt", File, T0)), skip(SkipReason::Unchanged), Some(Path), None);
        // … or when the item has no GUID at all.
        check("guid absent", true, SharePointServer, src("a.txt", File, None, T1),
            Candidates { by_guid: Some(tgt("z.txt", File, T0)), by_path: Some(tgt("a.txt", File, T0)) },
            copy(CopyReason::SourceNewer), Some(Path), None);
        check("guid absent, nothing at path", true, SharePointServer, src("a.txt", File, None, T1),
            at_guid(tgt("z.txt", File, T0)), copy(CopyReason::New), None, None);
    }

    #[test]
    fn rename_and_move_found_by_guid() {
        use MatchBasis::Guid;
        // Renamed at the source, unchanged content time → move, don't copy.
        check("rename unchanged", true, SharePointServer, src("b.txt", File, Some(G), T0),
            at_guid(tgt("a.txt", File, T0)), skip(SkipReason::Unchanged), Some(Guid), Some("a.txt"));
        // Moved and edited → move, then copy the newer content over it.
        check("move and edit", true, SharePointServer, src("x/b.txt", File, Some(G), T1),
            at_guid(tgt("a.txt", File, T0)), copy(CopyReason::SourceNewer), Some(Guid), Some("a.txt"));
        // Folder renamed → move the folder.
        check("folder rename", true, SharePointServer, src("new", Folder, Some(G), T0),
            at_guid(tgt("old", Folder, T0)), skip(SkipReason::AlreadyExists), Some(Guid), Some("old"));
        // The new path is taken by another item → fail, overwrite nothing.
        check("relocation blocked", true, SharePointServer, src("b.txt", File, Some(G), T1),
            Candidates { by_guid: Some(tgt("a.txt", File, T0)), by_path: Some(tgt("b.txt", File, T0)) },
            Action::Fail { conflict: Conflict::RelocationBlocked { from: "a.txt".into(), to: "b.txt".into() } },
            Some(Guid), None);
        // A GUID entry of the other kind is not a match (path fallback applies).
        check("guid kind mismatch", true, SharePointServer, src("b.txt", File, Some(G), T1),
            at_guid(tgt("b.txt", Folder, T0)), copy(CopyReason::New), None, None);
    }

    #[test]
    fn clock_precision_and_missing_timestamps() {
        use MatchBasis::Path;
        // Sub-second differences are not changes (SharePoint keeps whole seconds).
        check("fraction newer, same second", true, FileShare, src("a", File, None, T0_FRAC),
            at_path(tgt("a", File, T0)), skip(SkipReason::Unchanged), Some(Path), None);
        check("target fraction", true, FileShare, src("a", File, None, T0),
            at_path(tgt("a", File, T0_FRAC)), skip(SkipReason::Unchanged), Some(Path), None);
        // One whole second is a change, both ways.
        check("one second newer", true, FileShare, src("a", File, None, T1),
            at_path(tgt("a", File, T0_FRAC)), copy(CopyReason::SourceNewer), Some(Path), None);
        check("one second older", true, FileShare, src("a", File, None, T0_FRAC),
            at_path(tgt("a", File, T1)), skip(SkipReason::TargetIsNewer), Some(Path), None);
        // Missing timestamps cannot prove "unchanged": copy.
        check("source time missing", true, FileShare, src("a", File, None, ""),
            at_path(tgt("a", File, T0)), copy(CopyReason::TimestampUnknown), Some(Path), None);
        check("target time missing", true, FileShare, src("a", File, None, T0),
            at_path(tgt("a", File, "")), copy(CopyReason::TimestampUnknown), Some(Path), None);
        // Pre-1970 timestamps floor correctly (no off-by-one on negatives).
        let early = Utc.with_ymd_and_hms(1969, 12, 31, 23, 59, 59).unwrap();
        let s = SourceFacts { path: "a", kind: File, unique_id: None,
            modified: Some(early + chrono::Duration::milliseconds(500)) };
        let c = at_path(TargetFacts { path: "a", kind: File, modified: Some(early) });
        assert_eq!(decide(true, FileShare, &s, &c).action, skip(SkipReason::Unchanged));
    }

    #[test]
    fn incremental_off_copies_files_again() {
        use MatchBasis::Path;
        check("off, target newer", false, FileShare, src("a", File, None, T_EARLY),
            at_path(tgt("a", File, T0)), copy(CopyReason::NotIncremental), Some(Path), None);
        check("off, folder exists", false, FileShare, src("d", Folder, None, T0),
            at_path(tgt("d", Folder, T0)), skip(SkipReason::AlreadyExists), Some(Path), None);
        check("off, new", false, FileShare, src("a", File, None, T0),
            Candidates::default(), copy(CopyReason::New), None, None);
    }

    #[test]
    fn kind_mismatch_fails_without_overwriting() {
        use MatchBasis::Path;
        check("file over folder", true, FileShare, src("a", File, None, T1),
            at_path(tgt("a", Folder, T0)),
            Action::Fail { conflict: Conflict::KindMismatch { target_path: "a".into() } }, Some(Path), None);
        check("folder over file", true, FileShare, src("a", Folder, None, T1),
            at_path(tgt("a", File, T0)),
            Action::Fail { conflict: Conflict::KindMismatch { target_path: "a".into() } }, Some(Path), None);
    }
}
