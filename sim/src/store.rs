//! In-memory model of the farm/tenant with write-behind persistence to redb.
//!
//! Invariant: every mutation happens under the one `State` write lock and pushes the
//! records it changed onto `State::dirty`; `Store::commit` hands them to the persister
//! thread, which writes them in batches (one redb transaction per batch, durable when
//! it commits). A crash loses at most the batch in flight. File content never lives
//! here: it is stored once under `blobs/{uuid}` named by a server-made id, so no user
//! input ever becomes a local path.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

use base64::Engine;
use chrono::{DateTime, Utc};
use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::{SimError, SimResult};

const RECORDS: TableDefinition<&str, &[u8]> = TableDefinition::new("records");

/// A site collection.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SiteColl {
    /// Site collection id (`SPSite.Id`).
    pub id: Uuid,
    /// Root web of the collection.
    pub root_web: Uuid,
    /// Server-relative URL (`/` or `/sites/hr`).
    pub url: String,
    /// When provisioning finishes (`None` = ready).
    pub ready_at: Option<DateTime<Utc>>,
    /// Hub this site is associated with (nil = none).
    pub hub_site_id: Uuid,
}

/// A web (the root web of a site collection or a subsite).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Web {
    /// Web id.
    pub id: Uuid,
    /// Owning site collection.
    pub site_id: Uuid,
    /// Parent web (`None` for a root web).
    pub parent: Option<Uuid>,
    /// Server-relative URL.
    pub url: String,
    /// Title.
    pub title: String,
    /// Description.
    pub description: String,
    /// Web template (`STS#3`, ...).
    pub template: String,
    /// Creation time.
    pub created: DateTime<Utc>,
}

/// A document library (list with BaseTemplate 101).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Library {
    /// List id.
    pub id: Uuid,
    /// Owning web.
    pub web_id: Uuid,
    /// Title (`Documents`).
    pub title: String,
    /// Root folder name inside the web (`Shared Documents`).
    pub url_name: String,
    /// Description.
    pub description: String,
    /// Root folder (an `Item` with `parent: None`).
    pub root: Uuid,
    /// List template (101 = document library).
    pub base_template: u32,
    /// Creation time.
    pub created: DateTime<Utc>,
    /// Last list item id handed out.
    pub last_item_id: u64,
}

/// A file or folder.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Item {
    /// `UniqueId` (SharePoint) = item id (Graph, as hex).
    pub unique_id: Uuid,
    /// Library.
    pub list_id: Uuid,
    /// List item id (0 for the root folder).
    pub item_id: u64,
    /// Parent folder (`None` for the root folder).
    pub parent: Option<Uuid>,
    /// Leaf name.
    pub name: String,
    /// Folder or file.
    pub folder: bool,
    /// Size in bytes (files).
    pub size: u64,
    /// Creation time (`fileSystemInfo.createdDateTime`, `TimeCreated`).
    pub created: DateTime<Utc>,
    /// Last modification time.
    pub modified: DateTime<Utc>,
    /// Content blob (files).
    pub blob: Option<Uuid>,
    /// quickXorHash, base64.
    pub qxh: String,
    /// Content version (cTag; part of the eTag).
    pub version: u32,
    /// Metadata revisions (rename, move, timestamps) — the eTag is `version + meta_rev`.
    #[serde(default)]
    pub meta_rev: u32,
    /// Change sequence number (delta ordering).
    pub seq: u64,
    /// Tombstone for delta.
    pub deleted: bool,
    /// Who created it.
    pub author: String,
}

impl Item {
    /// The number in the eTag (changes on any change; the cTag only on content changes).
    pub fn etag_rev(&self) -> u32 {
        self.version + self.meta_rev
    }
}

/// A hub site registration.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Hub {
    /// Hub id.
    pub id: Uuid,
    /// Site collection id.
    pub site_id: Uuid,
    /// Absolute URL.
    pub site_url: String,
    /// Title.
    pub title: String,
}

enum Op {
    Put(String, Vec<u8>),
    Del(String),
    Clear,
    Flush(mpsc::Sender<()>),
}

/// The whole in-memory model plus its indexes.
#[derive(Default)]
pub struct State {
    /// Site collections by id.
    pub sites: HashMap<Uuid, SiteColl>,
    /// Webs by id.
    pub webs: HashMap<Uuid, Web>,
    /// Lower-cased server-relative URL → web.
    pub web_by_url: HashMap<String, Uuid>,
    /// Libraries by id.
    pub libs: HashMap<Uuid, Library>,
    /// Items (and tombstones) by unique id.
    pub items: HashMap<Uuid, Item>,
    /// Folder → lower-cased child name → child.
    pub children: HashMap<Uuid, BTreeMap<String, Uuid>>,
    /// Library → list item id → item.
    pub by_item_id: HashMap<Uuid, BTreeMap<u64, Uuid>>,
    /// Library → change sequence → item (for delta).
    pub by_seq: HashMap<Uuid, BTreeMap<u64, Uuid>>,
    /// Hubs by id.
    pub hubs: HashMap<Uuid, Hub>,
    /// Last change sequence handed out.
    pub seq: u64,
    dirty: Vec<Op>,
}

/// Normalise a server-relative URL: leading `/`, no trailing `/`, `/` for the root.
pub fn norm_url(url: &str) -> String {
    let t = url.trim_matches('/');
    if t.is_empty() {
        "/".to_owned()
    } else {
        format!("/{t}")
    }
}

/// Join a web URL and a relative part.
pub fn join_url(base: &str, rel: &str) -> String {
    let rel = rel.trim_matches('/');
    if base == "/" {
        format!("/{rel}")
    } else if rel.is_empty() {
        base.to_owned()
    } else {
        format!("{base}/{rel}")
    }
}

/// Validate one path segment or a new item name.
pub fn check_name(name: &str) -> SimResult<()> {
    if name.is_empty() || name == "." || name == ".." {
        return Err(SimError::InvalidRequest(format!(
            "The name '{name}' is not valid."
        )));
    }
    if name.len() > 255
        || name
            .chars()
            .any(|c| "\"*:<>?/\\|".contains(c) || c.is_control())
        || name.starts_with(' ')
        || name.ends_with(' ')
        || name.to_ascii_lowercase().contains("_vti_")
    {
        return Err(SimError::InvalidRequest(
            "The provided name contains invalid characters or is not allowed.".to_owned(),
        ));
    }
    Ok(())
}

/// Split a decoded relative path into validated segments (rejects `..`, `.`, `\`).
pub fn split_path(path: &str) -> SimResult<Vec<String>> {
    if path.contains('\\') || path.contains('\0') {
        return Err(SimError::InvalidRequest(
            "The path contains invalid characters.".to_owned(),
        ));
    }
    let mut out = Vec::new();
    for seg in path.split('/') {
        if seg.is_empty() {
            continue;
        }
        if seg == "." || seg == ".." {
            return Err(SimError::InvalidRequest(
                "The path may not contain '.' or '..' segments.".to_owned(),
            ));
        }
        out.push(seg.to_owned());
    }
    Ok(out)
}

/// What a server-relative URL points at.
#[derive(Debug, Clone, Copy)]
pub struct Resolved {
    /// The deepest web whose URL prefixes the path.
    pub web: Uuid,
    /// The library, when the path goes into one.
    pub lib: Option<Uuid>,
    /// The item (folder or file), when it exists.
    pub item: Option<Uuid>,
}

impl State {
    fn put<T: Serialize>(&mut self, key: String, value: &T) {
        if let Ok(v) = serde_json::to_vec(value) {
            self.dirty.push(Op::Put(key, v));
        }
    }

    /// Record a changed site collection.
    pub fn save_site(&mut self, id: Uuid) {
        if let Some(s) = self.sites.get(&id).cloned() {
            self.put(format!("site/{id}"), &s);
        }
    }
    /// Record a changed web.
    pub fn save_web(&mut self, id: Uuid) {
        if let Some(s) = self.webs.get(&id).cloned() {
            self.put(format!("web/{id}"), &s);
        }
    }
    /// Record a changed library.
    pub fn save_lib(&mut self, id: Uuid) {
        if let Some(s) = self.libs.get(&id).cloned() {
            self.put(format!("lib/{id}"), &s);
        }
    }
    /// Record a changed hub.
    pub fn save_hub(&mut self, id: Uuid) {
        if let Some(s) = self.hubs.get(&id).cloned() {
            self.put(format!("hub/{id}"), &s);
        }
    }
    /// Remove a hub.
    pub fn delete_hub(&mut self, id: Uuid) {
        self.hubs.remove(&id);
        self.dirty.push(Op::Del(format!("hub/{id}")));
    }

    fn index_item(&mut self, it: &Item) {
        if it.deleted {
            return;
        }
        if let Some(p) = it.parent {
            self.children
                .entry(p)
                .or_default()
                .insert(it.name.to_lowercase(), it.unique_id);
        }
        if it.item_id > 0 {
            self.by_item_id
                .entry(it.list_id)
                .or_default()
                .insert(it.item_id, it.unique_id);
        }
    }

    fn unindex_item(&mut self, it: &Item) {
        if let Some(p) = it.parent {
            if let Some(c) = self.children.get_mut(&p) {
                if c.get(&it.name.to_lowercase()) == Some(&it.unique_id) {
                    c.remove(&it.name.to_lowercase());
                }
            }
        }
        if it.item_id > 0 {
            if let Some(m) = self.by_item_id.get_mut(&it.list_id) {
                m.remove(&it.item_id);
            }
        }
    }

    /// Give an existing item (and its ancestors) a new change sequence so delta reports
    /// them, as Graph does for the parents of a changed item.
    /// `size_delta` is added to each ancestor's aggregate size (folders carry the total
    /// size of their subtree, as Graph reports it).
    fn touch_chain(&mut self, mut cur: Option<Uuid>, size_delta: i64) {
        let mut guard = 0;
        while let Some(id) = cur {
            guard += 1;
            let Some(mut it) = self.items.get(&id).cloned() else {
                break;
            };
            if it.deleted || guard > 1000 {
                break;
            }
            if let Some(m) = self.by_seq.get_mut(&it.list_id) {
                m.remove(&it.seq);
            }
            self.seq += 1;
            it.seq = self.seq;
            it.size = it.size.saturating_add_signed(size_delta);
            self.by_seq
                .entry(it.list_id)
                .or_default()
                .insert(it.seq, id);
            self.put(format!("item/{id}"), &it);
            cur = it.parent;
            self.items.insert(id, it);
        }
    }

    /// Insert or replace an item, bumping its change sequence and its ancestors'; persists it.
    pub fn upsert_item(&mut self, mut it: Item) {
        let contrib = |i: &Item| if i.deleted { 0 } else { i.size as i64 };
        let (old_parent, old_contrib) = match self.items.get(&it.unique_id) {
            Some(o) => (o.parent, contrib(o)),
            None => (None, 0),
        };
        if let Some(old) = self.items.get(&it.unique_id).cloned() {
            self.unindex_item(&old);
            if let Some(m) = self.by_seq.get_mut(&old.list_id) {
                m.remove(&old.seq);
            }
        }
        if old_parent.is_some() && old_parent != it.parent {
            self.touch_chain(old_parent, -old_contrib);
            self.touch_chain(it.parent, contrib(&it));
        } else {
            self.touch_chain(it.parent, contrib(&it) - old_contrib);
        }
        self.seq += 1;
        it.seq = self.seq;
        self.by_seq
            .entry(it.list_id)
            .or_default()
            .insert(it.seq, it.unique_id);
        self.index_item(&it);
        let key = format!("item/{}", it.unique_id);
        self.put(key, &it);
        self.items.insert(it.unique_id, it);
        let seq = self.seq;
        self.put("meta/seq".to_owned(), &seq);
    }

    /// Load an item from the store without bumping anything.
    fn load_item(&mut self, it: Item) {
        self.by_seq
            .entry(it.list_id)
            .or_default()
            .insert(it.seq, it.unique_id);
        self.index_item(&it);
        self.items.insert(it.unique_id, it);
    }

    /// Add a web (and index it).
    pub fn insert_web(&mut self, w: Web) {
        self.web_by_url.insert(w.url.to_lowercase(), w.id);
        let id = w.id;
        self.webs.insert(id, w);
        self.save_web(id);
    }

    /// Next list item id of a library.
    pub fn next_item_id(&mut self, lib: Uuid) -> u64 {
        let l = self.libs.get_mut(&lib).expect("library exists");
        l.last_item_id += 1;
        let id = l.last_item_id;
        self.save_lib(lib);
        id
    }

    /// Create a library with its root folder.
    pub fn create_library(
        &mut self,
        web_id: Uuid,
        id: Uuid,
        title: &str,
        url_name: &str,
        desc: &str,
    ) -> SimResult<Uuid> {
        check_name(url_name)?;
        let web = self
            .webs
            .get(&web_id)
            .ok_or_else(|| SimError::NotFound("Web not found.".into()))?;
        let url = join_url(&web.url, url_name).to_lowercase();
        if self.libs.values().any(|l| {
            l.web_id == web_id
                && (l.title.eq_ignore_ascii_case(title)
                    || l.url_name.eq_ignore_ascii_case(url_name))
        }) || self.web_by_url.contains_key(&url)
        {
            return Err(SimError::NameAlreadyExists(format!(
                "A list, survey, discussion board, or document library with the specified title already exists in this Web site. Title: {title}"
            )));
        }
        let now = Utc::now();
        let root = Uuid::new_v4();
        self.libs.insert(
            id,
            Library {
                id,
                web_id,
                title: title.to_owned(),
                url_name: url_name.to_owned(),
                description: desc.to_owned(),
                root,
                base_template: 101,
                created: now,
                last_item_id: 0,
            },
        );
        self.save_lib(id);
        self.upsert_item(Item {
            unique_id: root,
            list_id: id,
            item_id: 0,
            parent: None,
            name: url_name.to_owned(),
            folder: true,
            size: 0,
            created: now,
            modified: now,
            blob: None,
            qxh: String::new(),
            version: 1,
            meta_rev: 0,
            seq: 0,
            deleted: false,
            author: "System Account".into(),
        });
        Ok(id)
    }

    /// Create a web.
    pub fn create_web(
        &mut self,
        site_id: Uuid,
        parent: Option<Uuid>,
        url: &str,
        title: &str,
        template: &str,
    ) -> SimResult<Uuid> {
        self.create_web_with(site_id, parent, url, title, template, None)
    }

    /// Create a web with a chosen id.
    pub fn create_web_with(
        &mut self,
        site_id: Uuid,
        parent: Option<Uuid>,
        url: &str,
        title: &str,
        template: &str,
        id: Option<Uuid>,
    ) -> SimResult<Uuid> {
        let url = norm_url(url);
        for s in split_path(&url)? {
            check_name(&s)?;
        }
        if self.web_by_url.contains_key(&url.to_lowercase()) {
            return Err(SimError::NameAlreadyExists(format!(
                "The Web site address \"{url}\" is already in use."
            )));
        }
        let id = id.unwrap_or_else(Uuid::new_v4);
        if self.webs.contains_key(&id) {
            return Err(SimError::NameAlreadyExists(format!(
                "A web with id {id} already exists."
            )));
        }
        self.insert_web(Web {
            id,
            site_id,
            parent,
            url,
            title: title.to_owned(),
            description: String::new(),
            template: template.to_owned(),
            created: Utc::now(),
        });
        Ok(id)
    }

    /// Create a site collection with its root web and a `Documents` library.
    pub fn create_site(
        &mut self,
        url: &str,
        title: &str,
        template: &str,
        ready_at: Option<DateTime<Utc>>,
    ) -> SimResult<Uuid> {
        self.create_site_with(url, title, template, ready_at, None, None)
    }

    /// Create a site collection with chosen ids.
    pub fn create_site_with(
        &mut self,
        url: &str,
        title: &str,
        template: &str,
        ready_at: Option<DateTime<Utc>>,
        site_id: Option<Uuid>,
        web_id: Option<Uuid>,
    ) -> SimResult<Uuid> {
        let url = norm_url(url);
        let id = site_id.unwrap_or_else(Uuid::new_v4);
        if self.sites.contains_key(&id) {
            return Err(SimError::NameAlreadyExists(format!(
                "A site collection with id {id} already exists."
            )));
        }
        let web = self.create_web_with(id, None, &url, title, template, web_id)?;
        self.sites.insert(
            id,
            SiteColl {
                id,
                root_web: web,
                url,
                ready_at,
                hub_site_id: Uuid::nil(),
            },
        );
        self.save_site(id);
        self.create_library(web, Uuid::new_v4(), "Documents", "Shared Documents", "")?;
        Ok(id)
    }

    /// Web whose URL is the longest prefix of `url`, plus the remaining segments.
    pub fn web_for_url(&self, url: &str) -> Option<(Uuid, Vec<String>)> {
        let segs: Vec<&str> = url.split('/').filter(|s| !s.is_empty()).collect();
        for n in (0..=segs.len()).rev() {
            let cand = format!("/{}", segs[..n].join("/")).to_lowercase();
            if let Some(id) = self.web_by_url.get(&cand) {
                return Some((*id, segs[n..].iter().map(|s| (*s).to_owned()).collect()));
            }
        }
        None
    }

    /// Library of a web by its root folder name.
    pub fn lib_by_url_name(&self, web: Uuid, name: &str) -> Option<Uuid> {
        self.libs
            .values()
            .find(|l| l.web_id == web && l.url_name.eq_ignore_ascii_case(name))
            .map(|l| l.id)
    }

    /// Child of a folder by name.
    pub fn child(&self, folder: Uuid, name: &str) -> Option<Uuid> {
        self.children
            .get(&folder)
            .and_then(|c| c.get(&name.to_lowercase()))
            .copied()
    }

    /// Walk relative segments from a folder.
    pub fn walk(&self, mut folder: Uuid, segs: &[String]) -> Option<Uuid> {
        for s in segs {
            folder = self.child(folder, s)?;
        }
        Some(folder)
    }

    /// Resolve a server-relative URL.
    pub fn resolve(&self, url: &str) -> SimResult<Resolved> {
        let segs = split_path(url)?;
        let joined = format!("/{}", segs.join("/"));
        let (web, rest) = self
            .web_for_url(&joined)
            .ok_or_else(|| SimError::NotFound("File Not Found.".into()))?;
        if rest.is_empty() {
            return Ok(Resolved {
                web,
                lib: None,
                item: None,
            });
        }
        let Some(lib) = self.lib_by_url_name(web, &rest[0]) else {
            return Ok(Resolved {
                web,
                lib: None,
                item: None,
            });
        };
        let root = self.libs[&lib].root;
        Ok(Resolved {
            web,
            lib: Some(lib),
            item: self.walk(root, &rest[1..]),
        })
    }

    /// Path of an item relative to its library root (`A/B/c.txt`; empty for the root).
    pub fn rel_path(&self, id: Uuid) -> String {
        let mut parts = Vec::new();
        let mut cur = self.items.get(&id);
        while let Some(it) = cur {
            let Some(p) = it.parent else { break };
            parts.push(it.name.as_str());
            cur = self.items.get(&p);
        }
        parts.reverse();
        parts.join("/")
    }

    /// Server-relative URL of an item.
    pub fn item_url(&self, id: Uuid) -> String {
        let it = &self.items[&id];
        let lib = &self.libs[&it.list_id];
        let web = &self.webs[&lib.web_id];
        join_url(&join_url(&web.url, &lib.url_name), &self.rel_path(id))
    }

    /// Root folder URL of a library.
    pub fn lib_url(&self, lib: Uuid) -> String {
        let l = &self.libs[&lib];
        join_url(&self.webs[&l.web_id].url, &l.url_name)
    }

    /// Site collection of a web.
    pub fn site_of_web(&self, web: Uuid) -> &SiteColl {
        &self.sites[&self.webs[&web].site_id]
    }

    /// Is `anc` an ancestor of (or equal to) `id`?
    pub fn is_ancestor(&self, anc: Uuid, id: Uuid) -> bool {
        let mut cur = Some(id);
        while let Some(c) = cur {
            if c == anc {
                return true;
            }
            cur = self.items.get(&c).and_then(|i| i.parent);
        }
        false
    }

    /// Tombstone an item and its descendants; returns blobs to delete.
    pub fn delete_tree(&mut self, id: Uuid) -> Vec<Uuid> {
        let mut blobs = Vec::new();
        let mut stack = vec![id];
        let mut order = Vec::new();
        while let Some(c) = stack.pop() {
            order.push(c);
            if let Some(ch) = self.children.get(&c) {
                stack.extend(ch.values().copied());
            }
        }
        for c in order {
            if let Some(mut it) = self.items.get(&c).cloned() {
                self.unindex_item(&it);
                self.children.remove(&c);
                if let Some(b) = it.blob.take() {
                    blobs.push(b);
                }
                it.deleted = true;
                self.upsert_item(it);
            }
        }
        blobs
    }

    /// A name free in `folder`, SharePoint style (`a.txt` → `a 1.txt`).
    pub fn free_name(&self, folder: Uuid, name: &str) -> String {
        if self.child(folder, name).is_none() {
            return name.to_owned();
        }
        let (stem, ext) = match name.rfind('.') {
            Some(i) if i > 0 => (&name[..i], &name[i..]),
            _ => (name, ""),
        };
        (1..)
            .map(|n| format!("{stem} {n}{ext}"))
            .find(|c| self.child(folder, c).is_none())
            .unwrap_or_default()
    }

    /// Descendant count of a folder (direct children).
    pub fn child_count(&self, id: Uuid) -> usize {
        self.children.get(&id).map_or(0, |c| c.len())
    }

    /// Number of live items (excluding root folder) in a library.
    pub fn item_count(&self, lib: Uuid) -> usize {
        self.by_item_id.get(&lib).map_or(0, |m| m.len())
    }
}

/// Graph drive id of a library: `b!` + base64url(site ‖ web ‖ list).
pub fn drive_id(st: &State, lib: Uuid) -> String {
    let l = &st.libs[&lib];
    let w = &st.webs[&l.web_id];
    let mut b = Vec::with_capacity(48);
    b.extend_from_slice(w.site_id.as_bytes());
    b.extend_from_slice(w.id.as_bytes());
    b.extend_from_slice(l.id.as_bytes());
    format!(
        "b!{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
    )
}

/// Library of a drive id.
pub fn lib_of_drive(st: &State, drive: &str) -> Option<Uuid> {
    let b = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(drive.strip_prefix("b!")?)
        .ok()?;
    if b.len() != 48 {
        return None;
    }
    let id = Uuid::from_slice(&b[32..]).ok()?;
    st.libs.contains_key(&id).then_some(id)
}

/// Graph item id of an item.
pub fn graph_item_id(id: Uuid) -> String {
    id.simple().to_string().to_uppercase()
}

/// Parse a Graph item id.
pub fn parse_item_id(s: &str) -> Option<Uuid> {
    Uuid::try_parse(s).ok()
}

/// The store: state + blob directory + persister.
pub struct Store {
    state: RwLock<State>,
    tx: Mutex<mpsc::Sender<Op>>,
    worker: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// `{data_dir}/blobs`.
    pub blobs: PathBuf,
    /// `{data_dir}/uploads`.
    pub uploads: PathBuf,
    /// Upload-session records found at open (taken once by the upload module).
    pub upload_records: Mutex<Vec<Vec<u8>>>,
}

impl Store {
    /// Open (or create) the store in `data_dir`; returns it and whether it was empty.
    pub fn open(data_dir: &Path) -> SimResult<(Store, bool)> {
        let blobs = data_dir.join("blobs");
        let uploads = data_dir.join("uploads");
        std::fs::create_dir_all(&blobs)?;
        std::fs::create_dir_all(&uploads)?;
        let db = redb::Database::create(data_dir.join("sim.redb"))?;
        let mut st = State::default();
        let mut upload_records = Vec::new();
        {
            let tx = db.begin_write()?;
            tx.open_table(RECORDS)?;
            tx.commit()?;
            let rt = db
                .begin_read()
                .map_err(|e| SimError::Store(e.to_string()))?;
            let t = rt.open_table(RECORDS)?;
            for row in t.iter()? {
                let (k, v) = row?;
                let (k, v) = (k.value().to_owned(), v.value().to_vec());
                let parse_err =
                    |e: serde_json::Error| SimError::Store(format!("bad record {k}: {e}"));
                match k.split('/').next().unwrap_or("") {
                    "site" => {
                        let s: SiteColl = serde_json::from_slice(&v).map_err(parse_err)?;
                        st.sites.insert(s.id, s);
                    }
                    "web" => {
                        let w: Web = serde_json::from_slice(&v).map_err(parse_err)?;
                        st.web_by_url.insert(w.url.to_lowercase(), w.id);
                        st.webs.insert(w.id, w);
                    }
                    "lib" => {
                        let l: Library = serde_json::from_slice(&v).map_err(parse_err)?;
                        st.libs.insert(l.id, l);
                    }
                    "hub" => {
                        let h: Hub = serde_json::from_slice(&v).map_err(parse_err)?;
                        st.hubs.insert(h.id, h);
                    }
                    "item" => {
                        let i: Item = serde_json::from_slice(&v).map_err(parse_err)?;
                        st.load_item(i);
                    }
                    "meta" if k == "meta/seq" => {
                        st.seq = serde_json::from_slice(&v).map_err(parse_err)?
                    }
                    "upload" => upload_records.push(v),
                    _ => {}
                }
            }
        }
        let empty = st.sites.is_empty();
        let (tx, rx) = mpsc::channel::<Op>();
        let worker = std::thread::Builder::new()
            .name("ferry-sim-persist".into())
            .spawn(move || persist_loop(db, rx))?;
        Ok((
            Store {
                state: RwLock::new(st),
                tx: Mutex::new(tx),
                worker: Mutex::new(Some(worker)),
                blobs,
                uploads,
                upload_records: Mutex::new(upload_records),
            },
            empty,
        ))
    }

    /// Read access.
    pub fn read(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Write access; call `commit` with the guard when done.
    pub fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Hand the guard's dirty records to the persister (keeps their order).
    pub fn commit(&self, st: &mut State) {
        if st.dirty.is_empty() {
            return;
        }
        let tx = self.tx.lock().unwrap_or_else(|e| e.into_inner());
        for op in st.dirty.drain(..) {
            let _ = tx.send(op);
        }
    }

    /// Persist (`Some`) or delete (`None`) a record outside the item model (upload sessions).
    pub fn put_record(&self, key: String, value: Option<Vec<u8>>) {
        let op = match value {
            Some(v) => Op::Put(key, v),
            None => Op::Del(key),
        };
        let _ = self.tx.lock().unwrap_or_else(|e| e.into_inner()).send(op);
    }

    /// Wipe everything (state, blobs, store).
    pub fn clear(&self) {
        let mut st = self.write();
        *st = State::default();
        st.dirty.push(Op::Clear);
        self.commit(&mut st);
        drop(st);
        if let Ok(rd) = std::fs::read_dir(&self.blobs) {
            for e in rd.flatten() {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }

    /// Wait until everything handed over so far is durable.
    pub fn flush(&self) {
        let (tx, rx) = mpsc::channel();
        let sent = self
            .tx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send(Op::Flush(tx))
            .is_ok();
        if sent {
            let _ = rx.recv();
        }
    }

    /// Flush and stop the persister.
    pub fn close(&self) {
        self.flush();
        {
            let (dummy, _) = mpsc::channel();
            let mut g = self.tx.lock().unwrap_or_else(|e| e.into_inner());
            *g = dummy;
        }
        if let Some(h) = self.worker.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = h.join();
        }
    }

    /// Local path of a blob.
    pub fn blob_path(&self, id: Uuid) -> PathBuf {
        self.blobs.join(id.simple().to_string())
    }
}

fn persist_loop(db: redb::Database, rx: mpsc::Receiver<Op>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while let Ok(op) = rx.try_recv() {
            batch.push(op);
            if batch.len() >= 10_000 {
                break;
            }
        }
        let mut acks = Vec::new();
        let res = (|| -> Result<(), SimError> {
            let tx = db.begin_write()?;
            {
                let mut t = tx.open_table(RECORDS)?;
                for op in batch {
                    match op {
                        Op::Put(k, v) => {
                            t.insert(k.as_str(), v.as_slice())?;
                        }
                        Op::Del(k) => {
                            t.remove(k.as_str())?;
                        }
                        Op::Clear => {
                            t.retain(|_, _| false)?;
                        }
                        Op::Flush(a) => acks.push(a),
                    }
                }
            }
            tx.commit()?;
            Ok(())
        })();
        if let Err(error) = res {
            tracing::error!(message = "Persisting metadata failed.", %error);
        }
        for a in acks {
            let _ = a.send(());
        }
    }
}
