//! A file-share source: a local directory (or a mounted SMB/NFS share).
//!
//! The walk runs on a blocking thread (walkdir) and feeds a bounded channel, so a
//! slow consumer slows the walk down instead of growing memory. Order is
//! deterministic: depth first, siblings sorted by name (bytewise), every folder before
//! its contents.
//!
//! Symbolic links: a link to a file is followed (the entry carries the target's size
//! and times; [`FileShareSource::open`] reads the target). A link to a folder is never
//! followed — that is how loops and paths leading out of the share are avoided — and
//! is reported as an [`UnreadableEntry`] (code `symlinked_folder`), as are dangling
//! links (`dangling_symlink`) and anything that is not a regular file or folder
//! (FIFOs, sockets, devices: `not_a_regular_file`), which would block or make no
//! sense to copy.
//!
//! Hidden: on Unix, a name starting with `.`; on Windows, additionally the `hidden`
//! file attribute.

use std::path::{Component, Path, PathBuf};
use std::time::SystemTime;

use chrono::{DateTime, Utc};
use ferry_proto::ItemKind;
use tokio::sync::mpsc;
use tokio_util::io::ReaderStream;

use crate::{ByteStream, ConnectorError, SourceEntry, UnreadableEntry, WalkItem};

/// Bytes per read when streaming a file.
const READ_SIZE: usize = 128 * 1024;
/// Entries the walk may run ahead of its consumer.
const WALK_BUFFER: usize = 1024;

/// A local directory as a migration source.
#[derive(Clone, Debug)]
pub struct FileShareSource {
    /// Canonical absolute root (symlinks in the root path itself resolved).
    root: PathBuf,
}

impl FileShareSource {
    /// Opens `root`, which must be an existing directory.
    pub fn new(root: impl Into<PathBuf>) -> Result<Self, ConnectorError> {
        let given: PathBuf = root.into();
        let shown = given.display().to_string();
        let root = std::fs::canonicalize(&given).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => ConnectorError::NotFound {
                what: "The file share".to_owned(),
                location: shown.clone(),
                hint: "check the path; network shares must be mounted on this machine (and on every worker)".to_owned(),
            },
            _ => ConnectorError::Io {
                location: shown.clone(),
                source: e,
            },
        })?;
        let meta = std::fs::metadata(&root).map_err(|e| ConnectorError::Io {
            location: shown.clone(),
            source: e,
        })?;
        if !meta.is_dir() {
            return Err(ConnectorError::NotFound {
                what: "The file share folder".to_owned(),
                location: shown,
                hint: "the path is a file, not a folder; give the folder to migrate".to_owned(),
            });
        }
        Ok(Self { root })
    }

    /// The canonical root folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Walks everything under `subtree` (`""` = the whole share; the subtree folder
    /// itself is not emitted). Never fails as a whole: problems are items.
    pub fn walk(&self, subtree: &str) -> mpsc::Receiver<WalkItem> {
        let (tx, rx) = mpsc::channel(WALK_BUFFER);
        let root = self.root.clone();
        let subtree = subtree.trim_matches('/').to_owned();
        tokio::task::spawn_blocking(move || walk_blocking(&root, &subtree, &tx));
        rx
    }

    /// The folders directly under `subtree` (`""` = the root), sorted, as
    /// root-relative paths, for splitting a share into subtree chunks. Symlinked
    /// folders are left out (the walk does not follow them).
    pub async fn child_folders(&self, subtree: &str) -> Result<Vec<String>, ConnectorError> {
        let subtree = subtree.trim_matches('/').to_owned();
        let dir = if subtree.is_empty() {
            self.root.clone()
        } else {
            self.resolve(&subtree)?
        };
        let location = dir.display().to_string();
        let io = |source| ConnectorError::Io {
            location: location.clone(),
            source,
        };
        let mut rd = tokio::fs::read_dir(&dir).await.map_err(io)?;
        let mut out = Vec::new();
        while let Some(e) = rd.next_entry().await.map_err(io)? {
            let ft = e.file_type().await.map_err(io)?;
            let Some(name) = e.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if ft.is_dir() {
                out.push(if subtree.is_empty() {
                    name
                } else {
                    format!("{subtree}/{name}")
                });
            }
        }
        out.sort();
        Ok(out)
    }

    /// Opens one file for streaming. `rel_path` is `/`-separated and relative; `..`,
    /// `.`, empty segments and absolute paths are refused.
    pub async fn open(&self, rel_path: &str) -> Result<ByteStream, ConnectorError> {
        let path = self.resolve(rel_path)?;
        let location = path.display().to_string();
        let io = |source| ConnectorError::Io {
            location: location.clone(),
            source,
        };
        // Like the walk, never go through a symlinked folder.
        let mut dir = self.root.clone();
        let segs: Vec<&str> = rel_path.split('/').collect();
        for seg in &segs[..segs.len() - 1] {
            dir.push(seg);
            let m = tokio::fs::symlink_metadata(&dir).await.map_err(io)?;
            if m.file_type().is_symlink() {
                return Err(io(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "the path goes through a symbolic link to a folder, which is not followed",
                )));
            }
        }
        // Check first: opening a FIFO for reading would block until a writer comes.
        let meta = tokio::fs::metadata(&path).await.map_err(io)?;
        if !meta.is_file() {
            return Err(io(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "not a regular file",
            )));
        }
        let file = tokio::fs::File::open(&path).await.map_err(io)?;
        Ok(Box::pin(ReaderStream::with_capacity(file, READ_SIZE)))
    }

    fn resolve(&self, rel_path: &str) -> Result<PathBuf, ConnectorError> {
        let bad = |why: &str| ConnectorError::Io {
            location: rel_path.to_owned(),
            source: std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("refused path: {why}"),
            ),
        };
        if rel_path.is_empty() || rel_path.starts_with('/') || rel_path.contains('\0') {
            return Err(bad("it must be a relative path"));
        }
        let mut path = self.root.clone();
        for seg in rel_path.split('/') {
            if seg.is_empty() || seg == "." || seg == ".." {
                return Err(bad("empty, '.' or '..' segments are not allowed"));
            }
            let mut comps = Path::new(seg).components();
            match (comps.next(), comps.next()) {
                (Some(Component::Normal(_)), None) => path.push(seg),
                _ => return Err(bad("each segment must be a plain name")),
            }
        }
        Ok(path)
    }
}

fn time(t: std::io::Result<SystemTime>) -> Option<DateTime<Utc>> {
    t.ok().map(DateTime::<Utc>::from)
}

fn os_code(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(n) => format!("os_error_{n}"),
        None => format!("{:?}", e.kind()).to_lowercase(),
    }
}

fn rel_of(root: &Path, path: &Path) -> Result<String, String> {
    let rel = path.strip_prefix(root).unwrap_or(path);
    let mut parts = Vec::new();
    for c in rel.components() {
        match c.as_os_str().to_str() {
            Some(s) => parts.push(s.to_owned()),
            None => return Err(rel.to_string_lossy().replace('\\', "/")),
        }
    }
    Ok(parts.join("/"))
}

#[cfg(windows)]
fn hidden_attr(meta: &std::fs::Metadata) -> bool {
    use std::os::windows::fs::MetadataExt;
    meta.file_attributes() & 0x2 != 0
}

#[cfg(not(windows))]
fn hidden_attr(_meta: &std::fs::Metadata) -> bool {
    false
}

fn walk_blocking(root: &Path, subtree: &str, tx: &mpsc::Sender<WalkItem>) {
    let start = if subtree.is_empty() {
        root.to_path_buf()
    } else {
        root.join(subtree)
    };
    let send = |item: WalkItem| tx.blocking_send(item).is_ok();
    match std::fs::symlink_metadata(&start) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            send(Err(UnreadableEntry {
                rel_path: subtree.to_owned(),
                location: start.display().to_string(),
                message: "The subtree to walk is not a folder.".to_owned(),
                code: "not_a_folder".to_owned(),
            }));
            return;
        }
        Err(e) => {
            send(Err(UnreadableEntry {
                rel_path: subtree.to_owned(),
                location: start.display().to_string(),
                message: format!("The subtree to walk cannot be read: {e}."),
                code: os_code(&e),
            }));
            return;
        }
    }
    let walker = walkdir::WalkDir::new(&start)
        .min_depth(1)
        .follow_links(false)
        .sort_by_file_name();
    for item in walker {
        let entry = match item {
            Ok(entry) => entry,
            Err(err) => {
                let path = err.path().map(Path::to_path_buf).unwrap_or(start.clone());
                let rel = rel_of(root, &path).unwrap_or_else(|lossy| lossy);
                let code = err
                    .io_error()
                    .map(os_code)
                    .unwrap_or_else(|| "walk_error".to_owned());
                tracing::debug!(message = "Cannot read a file-share entry.", path = %path.display(), error = %err);
                if !send(Err(UnreadableEntry {
                    rel_path: rel,
                    location: path.display().to_string(),
                    message: format!("Cannot read this entry: {err}."),
                    code,
                })) {
                    return;
                }
                continue;
            }
        };
        let path = entry.path();
        let location = path.display().to_string();
        let rel = match rel_of(root, path) {
            Ok(r) => r,
            Err(lossy) => {
                if !send(Err(UnreadableEntry {
                    rel_path: lossy,
                    location,
                    message:
                        "The name is not valid Unicode and cannot be carried to SharePoint Online."
                            .to_owned(),
                    code: "invalid_name_encoding".to_owned(),
                })) {
                    return;
                }
                continue;
            }
        };
        let unreadable = |message: String, code: &str| {
            Err(UnreadableEntry {
                rel_path: rel.clone(),
                location: location.clone(),
                message,
                code: code.to_owned(),
            })
        };
        let ft = entry.file_type();
        let meta = if ft.is_symlink() {
            match std::fs::metadata(path) {
                Ok(m) if m.is_dir() => {
                    let item = unreadable(
                        "A symbolic link to a folder is not followed (it could loop or lead out of the share).".to_owned(),
                        "symlinked_folder",
                    );
                    if !send(item) {
                        return;
                    }
                    continue;
                }
                Ok(m) => m,
                Err(e) => {
                    let code = if e.kind() == std::io::ErrorKind::NotFound {
                        "dangling_symlink".to_owned()
                    } else {
                        os_code(&e)
                    };
                    if !send(unreadable(
                        format!("The symbolic link cannot be followed: {e}."),
                        &code,
                    )) {
                        return;
                    }
                    continue;
                }
            }
        } else {
            match entry.metadata() {
                Ok(m) => m,
                Err(e) => {
                    let code = e
                        .io_error()
                        .map(os_code)
                        .unwrap_or_else(|| "walk_error".to_owned());
                    if !send(unreadable(format!("Cannot read the metadata: {e}."), &code)) {
                        return;
                    }
                    continue;
                }
            }
        };
        let kind = if meta.is_dir() {
            ItemKind::Folder
        } else if meta.is_file() {
            ItemKind::File
        } else {
            if !send(unreadable(
                "Not a regular file or folder (FIFO, socket or device); it is not copied."
                    .to_owned(),
                "not_a_regular_file",
            )) {
                return;
            }
            continue;
        };
        let name = entry.file_name().to_string_lossy();
        let hidden = name.starts_with('.') || hidden_attr(&meta);
        let item = Ok(SourceEntry {
            rel_path: rel.clone(),
            kind,
            size: if kind == ItemKind::File {
                meta.len()
            } else {
                0
            },
            created: time(meta.created()),
            modified: time(meta.modified()),
            unique_id: None,
            hidden,
            location: location.clone(),
        });
        if !send(item) {
            return;
        }
    }
}
