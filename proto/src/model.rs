//! The job model in the user's words: a **job** holds **tasks** (one source, one
//! destination each) and **settings**; a task is planned into **libraries**; a
//! library is split into **chunks** that workers execute; every item ends in an
//! **outcome**. Everything here is plain data with serde, no I/O.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Version of every message and file this crate defines. A reader refuses a
/// newer major version instead of guessing (see [`check_schema`]).
pub const SCHEMA_VERSION: u32 = 1;

/// Refuses a message written by a newer Ferry than this one.
pub fn check_schema(found: u32, what: &str) -> Result<(), crate::ProtoError> {
    if found == 0 || found > SCHEMA_VERSION {
        return Err(crate::ProtoError::SchemaVersion {
            what: what.to_string(),
            found,
            supported: SCHEMA_VERSION,
        });
    }
    Ok(())
}

fn schema_version() -> u32 {
    SCHEMA_VERSION
}

/// A job's identity: stable across pauses, resumes and machines.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobId(pub Uuid);

impl JobId {
    pub fn new() -> Self {
        JobId(Uuid::new_v4())
    }
}

impl Default for JobId {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Display for JobId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// Where content comes from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Source {
    /// A local directory or a mounted/UNC file share. Items are matched by path.
    FileShare {
        /// The directory whose contents are migrated (the directory itself is not
        /// recreated, as in SPMT).
        path: String,
    },
    /// A document library of a SharePoint Server site. Items are matched by list
    /// item GUID (`UniqueId`), folder path as the fallback.
    SharePointServer {
        /// Absolute site URL, e.g. `https://intranet.example.com/sites/hr`.
        site_url: String,
        /// Library title as shown to users (e.g. `Shared Documents`, `Documents`).
        /// `None` means every library of the site (and its subsites), SPMT's
        /// "migrate all".
        library: Option<String>,
        /// Optional folder inside the library, relative to its root.
        subfolder: Option<String>,
    },
}

/// Where content goes: a SharePoint Online document library.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Destination {
    /// Absolute site URL, e.g. `https://contoso.sharepoint.com/sites/hr`.
    pub site_url: String,
    /// Library title; `None` only with a whole-site source, where each source
    /// library maps to the destination library of the same name.
    pub library: Option<String>,
    /// Optional folder inside the library, created when missing.
    pub subfolder: Option<String>,
}

/// Which hub the promoted sites of a modern-structure migration join.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum HubChoice {
    /// No hub association.
    #[default]
    None,
    /// Register the destination site as a hub and join the promoted sites to it.
    RegisterDestination,
    /// Join the promoted sites to an existing hub, named by title or site URL.
    JoinExisting { hub: String },
}

/// SPMT's "Keep the classic site structure" / "Switch to modern site structure".
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SiteStructure {
    /// Subsites stay subsites of the destination site.
    #[default]
    KeepClassic,
    /// Every level-one subsite becomes its own site collection; deeper subsites
    /// stay subsites of their promoted parent.
    SwitchToModern {
        #[serde(default)]
        hub: HubChoice,
    },
}

/// One source → destination pair, as the user added it ("Add a source").
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskSpec {
    pub source: Source,
    pub destination: Destination,
    #[serde(default)]
    pub structure: SiteStructure,
    /// The user's reviewed destination URL per source subsite (key: absolute
    /// source subsite URL; value: absolute destination site URL).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub subsite_destinations: BTreeMap<String, String>,
}

/// What SPMT does with a name SharePoint Online refuses.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum InvalidNamePolicy {
    /// Replace each invalid character with `with` (SPMT uses `_`) and trim
    /// leading/trailing spaces. Names that stay invalid (reserved names) are
    /// still failed with a reason.
    Replace { with: char },
    /// Leave the item out and report it as skipped with the reason.
    Skip,
}

impl Default for InvalidNamePolicy {
    fn default() -> Self {
        InvalidNamePolicy::Replace { with: '_' }
    }
}

/// Settings that apply to every task of a job.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct JobSettings {
    /// Incremental re-runs (SPMT's global setting). Fixed at the job's first
    /// run: a later run that asks for something else is refused.
    pub incremental: bool,
    /// Enumerate and evaluate everything, copy nothing (SPMT "Only perform scanning").
    pub scan_only: bool,
    /// File extensions (without the dot, case-insensitive) that are not migrated.
    pub skip_extensions: Vec<String>,
    /// Do not migrate files last modified before this instant.
    pub modified_after: Option<DateTime<Utc>>,
    /// Do not migrate files created before this instant.
    pub created_after: Option<DateTime<Utc>>,
    /// Migrate hidden files (file shares: dot-files and the hidden attribute).
    pub include_hidden: bool,
    /// Replace invalid characters or skip the item.
    pub invalid_names: InvalidNamePolicy,
    /// Owner (user principal name) of site collections the job creates.
    /// Required by SharePoint Online when signed in as an application; a
    /// person signed in owns what they create.
    pub site_owner: Option<String>,
}

impl Default for JobSettings {
    fn default() -> Self {
        JobSettings {
            incremental: true,
            scan_only: false,
            skip_extensions: Vec::new(),
            modified_after: None,
            created_after: None,
            include_hidden: true,
            invalid_names: InvalidNamePolicy::default(),
            site_owner: None,
        }
    }
}

/// Everything a user asks for when creating a job.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSpec {
    #[serde(default = "schema_version")]
    pub schema_version: u32,
    /// A name the user recognises in `ferry status`.
    pub name: String,
    pub tasks: Vec<TaskSpec>,
    #[serde(default)]
    pub settings: JobSettings,
}

/// A planned library: one source library (or folder tree) mapped to one
/// destination library, with the destination site it lands in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LibraryPlan {
    /// Index of the task in [`JobSpec::tasks`] this library came from.
    pub task: usize,
    pub source: SourceLibrary,
    pub destination: Destination,
    /// The planned destination site ([`Plan::sites`] index) this library lands
    /// in; its URL follows that site's (edited) destination. `None`: the
    /// destination site is given by the task and must exist.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<usize>,
    /// Files found by the plan's scan (review aid; not used to run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub items: Option<u64>,
    /// Bytes found by the plan's scan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
}

/// A source library resolved to what a worker needs to enumerate it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SourceLibrary {
    FileShare {
        path: String,
    },
    SharePointServer {
        site_url: String,
        /// The list's GUID (`Id`).
        list_id: Uuid,
        title: String,
        /// Server-relative URL of the library root folder.
        root_folder: String,
        subfolder: Option<String>,
    },
}

/// The resolved job: every library mapping, in a shape a person can review and
/// edit (`ferry plan`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    #[serde(default = "schema_version")]
    pub schema_version: u32,
    pub job: JobId,
    /// Destination sites of whole-site SharePoint Server tasks, parents before
    /// children: what the structure phase creates before content is copied.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sites: Vec<SitePlan>,
    pub libraries: Vec<LibraryPlan>,
}

/// How a planned destination site comes to exist.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SiteAction {
    /// The task's destination site: it must exist already.
    Existing,
    /// A site collection created through SPSiteManager (a level-one subsite
    /// promoted by "switch to modern").
    SiteCollection { template: String },
    /// A subsite created under the planned site `parent` (index into
    /// [`Plan::sites`]); its URL is the parent's plus one segment.
    Subsite { parent: usize, template: String },
}

/// Hub work for one destination site, done after its content.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SiteHub {
    #[default]
    None,
    /// Register this site as a hub.
    Register,
    /// Join the hub named by title or site URL.
    Join { hub: String },
}

/// One destination site of the plan: the line a person reviews and edits.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SitePlan {
    /// Index of the task this site came from.
    pub task: usize,
    /// Source web (site or subsite) URL.
    pub source: String,
    /// Destination URL. Edit this to choose where the site goes.
    pub destination: String,
    pub title: String,
    pub action: SiteAction,
    #[serde(default)]
    pub hub: SiteHub,
}

/// A reviewable, editable plan file (`ferry plan`, then `ferry migrate --plan`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanFile {
    #[serde(default = "schema_version")]
    pub schema_version: u32,
    pub spec: JobSpec,
    pub plan: Plan,
}

/// A unit of work on the queue: one library, or a slice of a huge one.
/// Carries no credential: workers look those up by `destination.site_url`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chunk {
    #[serde(default = "schema_version")]
    pub schema_version: u32,
    pub job: JobId,
    /// Unique within the job and stable across re-publishing, e.g. `L3` or `L3/7`.
    pub id: String,
    /// Index into [`Plan::libraries`].
    pub library: usize,
    /// Incremental round: 0 for the first run, then 1, 2, …
    pub round: u32,
    /// Folder subtree (relative to the library root) this chunk covers; empty
    /// for the whole library.
    #[serde(default)]
    pub subtree: String,
    /// Delivery attempt, counted by the queue; starts at 1.
    #[serde(default = "one")]
    pub attempt: u32,
}

fn one() -> u32 {
    1
}

/// File or folder.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ItemKind {
    File,
    Folder,
}

/// Why an item was deliberately not copied.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipReason {
    /// Incremental: the target's copy is at least as new as the source.
    TargetIsNewer,
    /// Incremental: same modified time (to the second) as the target's copy.
    Unchanged,
    /// Incremental: a folder or library that already exists at the target.
    AlreadyExists,
    /// The name is invalid in SharePoint Online and the policy is "skip".
    InvalidName,
    /// The extension is in the job's skip list.
    ExcludedExtension,
    /// Hidden files are not migrated by this job's settings.
    Hidden,
    /// Modified before the job's `modified_after`.
    ModifiedBefore,
    /// Created before the job's `created_after`.
    CreatedBefore,
    /// Scan-only job: evaluated, not copied.
    ScanOnly,
    /// The folder holding the item was itself skipped or failed.
    ParentNotMigrated,
    /// Renamed or moved at the source, content unchanged: the earlier copy
    /// (found by GUID) was moved to match; nothing was uploaded.
    MovedToMatchSource,
}

impl SkipReason {
    /// The sentence a report shows.
    pub fn message(self) -> &'static str {
        match self {
            SkipReason::TargetIsNewer => "The target item is newer than the source item.",
            SkipReason::Unchanged => "The item has not changed since the last migration.",
            SkipReason::AlreadyExists => "The item already exists at the target.",
            SkipReason::InvalidName => "The name is not allowed in SharePoint Online.",
            SkipReason::ExcludedExtension => "The file extension is excluded by the job settings.",
            SkipReason::Hidden => "Hidden files are excluded by the job settings.",
            SkipReason::ModifiedBefore => "The file was modified before the job's cut-off date.",
            SkipReason::CreatedBefore => "The file was created before the job's cut-off date.",
            SkipReason::ScanOnly => "Scan only: the item was evaluated, not copied.",
            SkipReason::MovedToMatchSource => {
                "Renamed or moved at the source with unchanged content: the earlier copy was moved to match."
            }
            SkipReason::ParentNotMigrated => {
                "The folder holding this item was not migrated (see that folder's line)."
            }
        }
    }
}

/// Classes of item failure; they decide retry behaviour and the report's
/// "Result category".
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureCategory {
    /// Name or path refused by SharePoint Online (reserved name, too long).
    InvalidName,
    /// Over the 250 GB file limit.
    TooLarge,
    /// The source could not be read (permissions, vanished, I/O error).
    SourceUnreadable,
    /// The destination refused the item (quota, access, conflict).
    DestinationRejected,
    /// The content arrived but its hash does not match the source.
    HashMismatch,
    /// Network or server error that outlived the retries.
    Transient,
}

/// What happened to one item.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Outcome {
    Copied,
    Skipped {
        reason: SkipReason,
    },
    Failed {
        category: FailureCategory,
        message: String,
        /// The server's or the OS's code, e.g. `nameAlreadyExists`, `0x80070005`.
        code: String,
    },
}

/// One line of the item report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemOutcome {
    /// Source location as the user knows it (file path or absolute URL).
    pub source: String,
    /// Destination URL (absolute) the item was or would have been written to.
    pub destination: String,
    pub name: String,
    pub kind: ItemKind,
    pub size: u64,
    pub outcome: Outcome,
}

/// Progress reported by workers; idempotent under redelivery because every
/// event names its chunk and, for items, the item's source.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgressEvent {
    #[serde(default = "schema_version")]
    pub schema_version: u32,
    pub job: JobId,
    pub chunk: String,
    pub round: u32,
    pub event: ProgressKind,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ProgressKind {
    ChunkStarted {
        worker: String,
    },
    Item(ItemOutcome),
    /// The destination asked us to wait (429/503 with Retry-After).
    Throttled {
        waited_ms: u64,
    },
    ChunkFinished {
        items: u64,
        bytes: u64,
    },
    ChunkFailed {
        message: String,
        will_retry: bool,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip<T>(value: &T)
    where
        T: Serialize + for<'de> Deserialize<'de> + PartialEq + std::fmt::Debug,
    {
        let json = serde_json::to_string(value).unwrap();
        let back: T = serde_json::from_str(&json).unwrap();
        assert_eq!(&back, value, "{json}");
    }

    fn sample_job() -> JobSpec {
        JobSpec {
            schema_version: SCHEMA_VERSION,
            name: "HR move".into(),
            tasks: vec![
                TaskSpec {
                    source: Source::FileShare {
                        path: r"\\fs01\hr\Policies".into(),
                    },
                    destination: Destination {
                        site_url: "https://contoso.sharepoint.com/sites/hr".into(),
                        library: Some("Documents".into()),
                        subfolder: Some("Policies/2024".into()),
                    },
                    structure: SiteStructure::KeepClassic,
                    subsite_destinations: BTreeMap::new(),
                },
                TaskSpec {
                    source: Source::SharePointServer {
                        site_url: "https://intranet.example.com/sites/hr".into(),
                        library: None,
                        subfolder: None,
                    },
                    destination: Destination {
                        site_url: "https://contoso.sharepoint.com/sites/hr".into(),
                        library: None,
                        subfolder: None,
                    },
                    structure: SiteStructure::SwitchToModern {
                        hub: HubChoice::JoinExisting {
                            hub: "Corporate".into(),
                        },
                    },
                    subsite_destinations: [(
                        "https://intranet.example.com/sites/hr/benefits".to_string(),
                        "https://contoso.sharepoint.com/sites/benefits".to_string(),
                    )]
                    .into(),
                },
            ],
            settings: JobSettings {
                skip_extensions: vec!["tmp".into()],
                modified_after: Some(
                    DateTime::parse_from_rfc3339("2020-01-01T00:00:00Z")
                        .unwrap()
                        .into(),
                ),
                invalid_names: InvalidNamePolicy::Skip,
                ..JobSettings::default()
            },
        }
    }

    #[test]
    fn wire_types_round_trip() {
        round_trip(&sample_job());
        let job = JobId::new();
        round_trip(&Plan {
            schema_version: SCHEMA_VERSION,
            job,
            libraries: vec![LibraryPlan {
                task: 1,
                source: SourceLibrary::SharePointServer {
                    site_url: "https://intranet.example.com/sites/hr".into(),
                    list_id: Uuid::from_u128(7),
                    title: "Shared Documents".into(),
                    root_folder: "/sites/hr/Shared Documents".into(),
                    subfolder: None,
                },
                destination: sample_job().tasks[0].destination.clone(),
                site: Some(0),
                items: Some(3),
                bytes: None,
            }],
            sites: vec![SitePlan {
                task: 1,
                source: "https://intranet.example.com/sites/hr/benefits".into(),
                destination: "https://contoso.sharepoint.com/sites/benefits".into(),
                title: "Benefits".into(),
                action: SiteAction::SiteCollection {
                    template: "STS#3".into(),
                },
                hub: SiteHub::Join {
                    hub: "Corporate".into(),
                },
            }],
        });
        round_trip(&Chunk {
            schema_version: SCHEMA_VERSION,
            job,
            id: "L0/3".into(),
            library: 0,
            round: 2,
            subtree: "A/B".into(),
            attempt: 1,
        });
        for event in [
            ProgressKind::ChunkStarted {
                worker: "w1".into(),
            },
            ProgressKind::Item(ItemOutcome {
                source: "/srv/share/a b.txt".into(),
                destination: "https://contoso.sharepoint.com/sites/hr/Documents/a b.txt".into(),
                name: "a b.txt".into(),
                kind: ItemKind::File,
                size: 42,
                outcome: Outcome::Failed {
                    category: FailureCategory::InvalidName,
                    message: "bad".into(),
                    code: "invalidRequest".into(),
                },
            }),
            ProgressKind::Throttled { waited_ms: 1500 },
            ProgressKind::ChunkFinished { items: 3, bytes: 9 },
            ProgressKind::ChunkFailed {
                message: "x".into(),
                will_retry: true,
            },
        ] {
            round_trip(&ProgressEvent {
                schema_version: SCHEMA_VERSION,
                job,
                chunk: "L0".into(),
                round: 0,
                event,
            });
        }
    }

    #[test]
    fn minimal_job_file_gets_defaults() {
        let job: JobSpec = serde_json::from_str(
            r#"{"name":"x","tasks":[{"source":{"kind":"file_share","path":"/data"},
                "destination":{"site_url":"https://t.sharepoint.com/sites/a","library":"Documents","subfolder":null}}]}"#,
        )
        .unwrap();
        assert_eq!(job.schema_version, SCHEMA_VERSION);
        assert_eq!(job.settings, JobSettings::default());
        assert_eq!(job.tasks[0].structure, SiteStructure::KeepClassic);
        assert!(
            job.settings.incremental,
            "SPMT-style incremental is on by default"
        );
    }

    #[test]
    fn newer_schema_is_refused_with_a_clear_message() {
        assert!(check_schema(SCHEMA_VERSION, "chunk").is_ok());
        let err = check_schema(SCHEMA_VERSION + 1, "chunk").unwrap_err();
        assert!(err.to_string().contains("upgrade Ferry"), "{err}");
        assert!(check_schema(0, "chunk").is_err());
    }
}
