//! Declarative seeding ("farm" descriptions) and local-folder import.
//!
//! Example farm (JSON):
//! ```json
//! {"sites": [{
//!   "url": "/sites/hr", "title": "HR",
//!   "libraries": [{"title": "Documents", "items": [
//!     {"path": "Policies/handbook.pdf", "size": 1048576},
//!     {"path": "readme.txt", "content": "hello", "unique_id": "0b1c...", "modified": "2024-01-02T03:04:05Z"},
//!     {"path": "Empty", "folder": true},
//!     {"path": "big.iso", "source": "/srv/iso/big.iso"}
//!   ]}],
//!   "webs": [{"url": "benefits", "title": "Benefits", "libraries": [{"title": "Forms"}]}]
//! }]}
//! ```

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::{SimError, SimResult};
use crate::http::{splitmix, Sim};
use crate::ops::{qxh_b64, Conflict, Written};
use crate::store::{check_name, join_url, split_path, Item};

/// A farm/tenant description.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Farm {
    /// Site collections (`/` is the root site collection, which always exists).
    #[serde(default)]
    pub sites: Vec<SiteSpec>,
}

/// A site collection.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteSpec {
    /// Server-relative URL, e.g. `/sites/hr`.
    pub url: String,
    /// Title (default: last URL segment).
    #[serde(default)]
    pub title: Option<String>,
    /// Web template (default `STS#0`).
    #[serde(default)]
    pub template: Option<String>,
    /// Site collection id (default: random).
    #[serde(default)]
    pub id: Option<Uuid>,
    /// Root web id (default: random).
    #[serde(default)]
    pub web_id: Option<Uuid>,
    /// Libraries of the root web (a `Documents` library always exists; listing it adds content).
    #[serde(default)]
    pub libraries: Vec<LibSpec>,
    /// Subsites.
    #[serde(default)]
    pub webs: Vec<WebSpec>,
}

/// A subsite.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebSpec {
    /// URL leaf relative to the parent web (`benefits`) or a full server-relative URL.
    pub url: String,
    /// Title (default: URL leaf).
    #[serde(default)]
    pub title: Option<String>,
    /// Web id (default: random).
    #[serde(default)]
    pub id: Option<Uuid>,
    /// Libraries.
    #[serde(default)]
    pub libraries: Vec<LibSpec>,
    /// Nested subsites.
    #[serde(default)]
    pub webs: Vec<WebSpec>,
}

/// A document library.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LibSpec {
    /// Title (`Documents`).
    pub title: String,
    /// Root folder name (default: `Shared Documents` for `Documents`, else the title).
    #[serde(default)]
    pub url_name: Option<String>,
    /// List id (default: random).
    #[serde(default)]
    pub id: Option<Uuid>,
    /// Files and folders.
    #[serde(default)]
    pub items: Vec<ItemSpec>,
    /// A local directory imported into the library root.
    #[serde(default)]
    pub import_dir: Option<PathBuf>,
}

/// A file or folder.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ItemSpec {
    /// Path relative to the library root (`A/B/c.txt`); missing folders are created.
    pub path: String,
    /// A folder instead of a file.
    #[serde(default)]
    pub folder: bool,
    /// Inline UTF-8 content.
    #[serde(default)]
    pub content: Option<String>,
    /// Size of deterministic generated content (used when `content`/`source` are absent).
    #[serde(default)]
    pub size: Option<u64>,
    /// Local file to copy the content from.
    #[serde(default)]
    pub source: Option<PathBuf>,
    /// `UniqueId` (default: random).
    #[serde(default)]
    pub unique_id: Option<Uuid>,
    /// Creation time (default: now).
    #[serde(default)]
    pub created: Option<DateTime<Utc>>,
    /// Modification time (default: `created` or now).
    #[serde(default)]
    pub modified: Option<DateTime<Utc>>,
}

/// Create the root site collection (first start).
pub fn init_root(sim: &Sim) -> SimResult<()> {
    let mut st = sim.store.write();
    if !st.web_by_url.contains_key("/") {
        st.create_site("/", "Communication site", "SITEPAGEPUBLISHING#0", None)?;
    }
    sim.store.commit(&mut st);
    Ok(())
}

/// Apply a farm description.
pub fn apply_farm(sim: &Sim, farm: &Farm) -> SimResult<()> {
    for s in &farm.sites {
        let url = crate::store::norm_url(&s.url);
        let title = s
            .title
            .clone()
            .unwrap_or_else(|| url.rsplit('/').next().unwrap_or("").to_owned());
        let web = {
            let mut st = sim.store.write();
            let web = match st.web_by_url.get(&url.to_lowercase()) {
                Some(w) => *w,
                None => {
                    let id = st.create_site_with(
                        &url,
                        &title,
                        s.template.as_deref().unwrap_or("STS#0"),
                        None,
                        s.id,
                        s.web_id,
                    )?;
                    st.sites[&id].root_web
                }
            };
            sim.store.commit(&mut st);
            web
        };
        apply_libs(sim, web, &s.libraries)?;
        apply_webs(sim, web, &s.webs)?;
    }
    Ok(())
}

fn apply_webs(sim: &Sim, parent: Uuid, webs: &[WebSpec]) -> SimResult<()> {
    for w in webs {
        let id = {
            let mut st = sim.store.write();
            let pw = st.webs[&parent].clone();
            let url = if w.url.starts_with('/') {
                crate::store::norm_url(&w.url)
            } else {
                join_url(&pw.url, &w.url)
            };
            let title = w
                .title
                .clone()
                .unwrap_or_else(|| url.rsplit('/').next().unwrap_or("").to_owned());
            let id = st.create_web_with(pw.site_id, Some(parent), &url, &title, "STS#0", w.id)?;
            st.create_library(id, Uuid::new_v4(), "Documents", "Shared Documents", "")?;
            sim.store.commit(&mut st);
            id
        };
        apply_libs(sim, id, &w.libraries)?;
        apply_webs(sim, id, &w.webs)?;
    }
    Ok(())
}

fn apply_libs(sim: &Sim, web: Uuid, libs: &[LibSpec]) -> SimResult<()> {
    for l in libs {
        let url_name = l.url_name.clone().unwrap_or_else(|| {
            if l.title == "Documents" {
                "Shared Documents".into()
            } else {
                l.title.clone()
            }
        });
        let lib = {
            let mut st = sim.store.write();
            let existing = st.lib_by_url_name(web, &url_name);
            let lib = match existing {
                Some(id) => id,
                None => st.create_library(
                    web,
                    l.id.unwrap_or_else(Uuid::new_v4),
                    &l.title,
                    &url_name,
                    "",
                )?,
            };
            sim.store.commit(&mut st);
            lib
        };
        let root = sim.store.read().libs[&lib].root;
        for it in &l.items {
            seed_item(sim, root, it)?;
        }
        if let Some(d) = &l.import_dir {
            import_dir(sim, root, d)?;
        }
    }
    Ok(())
}

fn write_content(sim: &Sim, src: &mut dyn Read) -> SimResult<Written> {
    let blob = Uuid::new_v4();
    let path = sim.store.blob_path(blob);
    let mut f = std::io::BufWriter::with_capacity(256 * 1024, std::fs::File::create(&path)?);
    let mut h = quickxorhash::QuickXorHash::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut size = 0u64;
    loop {
        let n = src.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        f.write_all(&buf[..n])?;
        size += n as u64;
    }
    f.flush()?;
    Ok(Written {
        blob,
        size,
        qxh: qxh_b64(&mut h),
    })
}

/// Deterministic pseudo-random bytes for a seeded file.
pub struct GenReader {
    state: u64,
    left: u64,
    buf: [u8; 8],
    pos: usize,
}

impl GenReader {
    /// `len` bytes derived from `seed` and `key`.
    pub fn new(seed: u64, key: &str, len: u64) -> Self {
        let mut k = seed;
        for b in key.bytes() {
            k = splitmix(k ^ u64::from(b));
        }
        GenReader {
            state: k,
            left: len,
            buf: [0; 8],
            pos: 8,
        }
    }
}

impl Read for GenReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let n = (out.len() as u64).min(self.left) as usize;
        for o in out.iter_mut().take(n) {
            if self.pos == 8 {
                self.state = splitmix(self.state);
                self.buf = self.state.to_le_bytes();
                self.pos = 0;
            }
            *o = self.buf[self.pos];
            self.pos += 1;
        }
        self.left -= n as u64;
        Ok(n)
    }
}

fn seed_item(sim: &Sim, root: Uuid, spec: &ItemSpec) -> SimResult<()> {
    let segs = split_path(&spec.path)?;
    let Some((name, dirs)) = segs.split_last() else {
        return Err(SimError::InvalidRequest("A seed item needs a path.".into()));
    };
    for s in &segs {
        check_name(s)?;
    }
    let parent = crate::ops::ensure_folders(sim, root, dirs, "System Account")?;
    let now = Utc::now();
    let created = spec.created.unwrap_or(now);
    let modified = spec.modified.or(spec.created).unwrap_or(now);
    let (folder, w) = if spec.folder {
        (true, None)
    } else if let Some(c) = &spec.content {
        (false, Some(write_content(sim, &mut c.as_bytes())?))
    } else if let Some(p) = &spec.source {
        (
            false,
            Some(write_content(sim, &mut std::fs::File::open(p)?)?),
        )
    } else {
        let key = format!("{}/{}", sim.store.read().item_url(root), spec.path);
        (
            false,
            Some(write_content(
                sim,
                &mut GenReader::new(sim.cfg.seed, &key, spec.size.unwrap_or(0)),
            )?),
        )
    };
    let mut st = sim.store.write();
    if let Some(ex) = st.child(parent, name) {
        let blobs = st.delete_tree(ex);
        for b in blobs {
            let _ = std::fs::remove_file(sim.store.blob_path(b));
        }
    }
    let list_id = st.items[&parent].list_id;
    let item_id = st.next_item_id(list_id);
    let id = spec.unique_id.unwrap_or_else(Uuid::new_v4);
    if st.items.contains_key(&id) {
        return Err(SimError::NameAlreadyExists(format!(
            "The unique id {id} is used twice in the seed."
        )));
    }
    st.upsert_item(Item {
        unique_id: id,
        list_id,
        item_id,
        parent: Some(parent),
        name: name.clone(),
        folder,
        size: w.as_ref().map_or(0, |w| w.size),
        created,
        modified,
        blob: w.as_ref().map(|w| w.blob),
        qxh: w.map(|w| w.qxh).unwrap_or_default(),
        version: 1,
        meta_rev: 0,
        seq: 0,
        deleted: false,
        author: "System Account".into(),
    });
    sim.store.commit(&mut st);
    Ok(())
}

/// Import a local directory tree into a folder (files keep their modification time).
pub fn import_dir(sim: &Sim, folder: Uuid, dir: &Path) -> SimResult<usize> {
    let mut n = 0;
    let mut stack = vec![(dir.to_path_buf(), folder)];
    while let Some((d, f)) = stack.pop() {
        let mut entries: Vec<_> = std::fs::read_dir(&d)?.flatten().collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let ft = e.file_type()?;
            let Some(name) = e.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if check_name(&name).is_err() {
                tracing::warn!(message = "Skipped a local entry with a name SharePoint does not allow.", name = %name);
                continue;
            }
            if ft.is_dir() {
                let (id, _) =
                    crate::ops::create_folder(sim, f, &name, Conflict::Replace, "System Account")?;
                stack.push((e.path(), id));
            } else if ft.is_file() {
                let w = write_content(sim, &mut std::fs::File::open(e.path())?)?;
                let m = e.metadata()?;
                let modified: Option<DateTime<Utc>> = m.modified().ok().map(DateTime::<Utc>::from);
                let created: Option<DateTime<Utc>> =
                    m.created().ok().map(DateTime::<Utc>::from).or(modified);
                let (_, _, old) = crate::ops::commit_file(
                    sim,
                    f,
                    &name,
                    Conflict::Replace,
                    None,
                    &w,
                    crate::ops::FsTimes { created, modified },
                    "System Account",
                )?;
                if let Some(o) = old {
                    let _ = std::fs::remove_file(sim.store.blob_path(o));
                }
                n += 1;
            }
        }
    }
    Ok(n)
}

/// Import into a library/folder given by server-relative URL.
pub fn import_into(sim: &Sim, dir: &Path, url: &str) -> SimResult<usize> {
    let r = sim.store.read().resolve(url)?;
    let folder = match r.item {
        Some(i) if sim.store.read().items[&i].folder => i,
        _ => {
            return Err(SimError::NotFound(format!(
                "No library or folder at '{url}'."
            )))
        }
    };
    import_dir(sim, folder, dir)
}
