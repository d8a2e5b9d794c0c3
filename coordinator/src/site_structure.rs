//! The structure phases of a round: before content, create the planned
//! destination sites, subsites and libraries; after content, hub work
//! (register, join) — in that order, as SPMT's bulk CSV does.
//!
//! Every step is idempotent (an existing site, library or hub membership is
//! recorded as "already exists"), so re-running or resuming a job creates
//! nothing twice. Each step is recorded as an item of the pseudo-chunk
//! [`STRUCTURE_CHUNK`] or [`HUB_CHUNK`], which the structure report reads.

use std::time::Duration;

use chrono::Utc;
use ferry_connectors::sites::{CreateSite, SitesClient};
use ferry_proto::{
    FailureCategory, ItemKind, ItemOutcome, Outcome, Plan, SiteAction, SiteHub, SkipReason,
};
use ferry_store::state::{ItemRecord, JobRecord, StateStore};

use crate::{tenant_root, CoordinatorError};

/// Pseudo-chunk holding the records of sites, subsites and libraries.
pub const STRUCTURE_CHUNK: &str = "S";
/// Pseudo-chunk holding the records of hub registrations and joins.
pub const HUB_CHUNK: &str = "H";

/// How long a new site collection may take to provision.
const PROVISIONING_TIMEOUT: Duration = Duration::from_secs(600);

fn record(
    key: String,
    source: &str,
    destination: &str,
    name: &str,
    outcome: Outcome,
) -> ItemRecord {
    ItemRecord {
        key,
        outcome: ItemOutcome {
            source: source.to_string(),
            destination: destination.to_string(),
            name: name.to_string(),
            kind: ItemKind::Folder,
            size: 0,
            outcome,
        },
        bytes_sent: 0,
        source_modified: None,
        at: Utc::now(),
    }
}

fn made(existed: bool) -> Outcome {
    if existed {
        Outcome::Skipped {
            reason: SkipReason::AlreadyExists,
        }
    } else {
        Outcome::Copied
    }
}

fn failed(e: &ferry_connectors::ConnectorError) -> Outcome {
    Outcome::Failed {
        category: FailureCategory::DestinationRejected,
        message: e.to_string(),
        code: "structure".into(),
    }
}

/// Creates the plan's destination sites and libraries (parents first). Stops
/// at the first failure, after recording it: content cannot go to a site
/// that is not there.
pub async fn build<S: StateStore>(
    store: &S,
    job: &JobRecord,
    round: u32,
    plan: &Plan,
    client: &SitesClient,
) -> Result<(), CoordinatorError> {
    let mut records = Vec::new();
    let owner = job.spec.settings.site_owner.clone();
    let result = build_inner(plan, client, &owner, &mut records).await;
    store
        .record_items(job.id, round, STRUCTURE_CHUNK, &records)
        .await?;
    result
}

async fn build_inner(
    plan: &Plan,
    client: &SitesClient,
    owner: &Option<String>,
    records: &mut Vec<ItemRecord>,
) -> Result<(), CoordinatorError> {
    for (i, site) in plan.sites.iter().enumerate() {
        let key = format!("s{i:06}");
        let outcome = match &site.action {
            SiteAction::Existing => match client.web(&site.destination).await {
                Ok(Some(_)) => Ok(true),
                Ok(None) => Err(ferry_connectors::ConnectorError::NotFound {
                    what: "The destination site".into(),
                    location: site.destination.clone(),
                    hint: "create it first, or edit the plan's destination for this site".into(),
                }),
                Err(e) => Err(e),
            },
            SiteAction::SiteCollection { template } => client
                .ensure_site(
                    &tenant_root(&site.destination),
                    &CreateSite {
                        title: site.title.clone(),
                        url: site.destination.clone(),
                        lcid: 1033,
                        web_template: template.clone(),
                        owner: owner.clone(),
                        description: format!("Migrated from {}", site.source),
                    },
                    PROVISIONING_TIMEOUT,
                )
                .await
                .map(|s| s.existed),
            SiteAction::Subsite { parent, template } => {
                let parent_url = &plan.sites[*parent].destination;
                let leaf = ferry_proto::structure::leaf(&site.destination);
                client
                    .ensure_subsite(parent_url, leaf, &site.title, template, 1033)
                    .await
                    .map(|(_, existed)| existed)
            }
        };
        match outcome {
            Ok(existed) => records.push(record(
                key,
                &site.source,
                &site.destination,
                &site.title,
                made(existed),
            )),
            Err(e) => {
                records.push(record(
                    key,
                    &site.source,
                    &site.destination,
                    &site.title,
                    failed(&e),
                ));
                let hint = match (&site.action, owner) {
                    (SiteAction::SiteCollection { .. }, None) => {
                        " (signed in as an application, SharePoint Online needs an owner for new sites: add --site-owner user@tenant)"
                    }
                    _ => "",
                };
                return Err(CoordinatorError::Structure(format!(
                    "destination site {} (for {}): {e}{hint}",
                    site.destination, site.source
                )));
            }
        }
        for (l, lib) in plan.libraries.iter().enumerate() {
            if lib.site != Some(i) {
                continue;
            }
            let Some(title) = &lib.destination.library else {
                continue;
            };
            let key = format!("s{i:06}/library{l:06}");
            match client.ensure_library(&site.destination, title).await {
                Ok((_, existed)) => records.push(record(
                    key,
                    &site.source,
                    &site.destination,
                    title,
                    made(existed),
                )),
                Err(e) => {
                    records.push(record(
                        key,
                        &site.source,
                        &site.destination,
                        title,
                        failed(&e),
                    ));
                    return Err(CoordinatorError::Structure(format!(
                        "library '{title}' in {}: {e}",
                        site.destination
                    )));
                }
            }
        }
    }
    Ok(())
}

/// Looks up a hub by title or site URL; the error lists the tenant's hubs.
pub async fn find_hub(
    client: &SitesClient,
    tenant: &str,
    name: &str,
) -> Result<ferry_connectors::sites::HubSite, CoordinatorError> {
    let hubs = client.hub_sites(tenant).await?;
    let wanted = name.trim().trim_end_matches('/');
    hubs.iter()
        .find(|h| {
            h.title.eq_ignore_ascii_case(wanted)
                || h.site_url
                    .trim_end_matches('/')
                    .eq_ignore_ascii_case(wanted)
        })
        .cloned()
        .ok_or_else(|| {
            let names: Vec<String> = hubs
                .iter()
                .map(|h| format!("'{}' ({})", h.title, h.site_url))
                .collect();
            CoordinatorError::Structure(if names.is_empty() {
                format!("there is no hub '{name}': the tenant has no hub sites yet")
            } else {
                format!(
                    "there is no hub '{name}'; the tenant's hubs are: {}",
                    names.join(", ")
                )
            })
        })
}

/// Checks, before anything runs, that every hub the plan joins by name exists.
pub async fn check_hubs(plan: &Plan, client: &SitesClient) -> Result<(), CoordinatorError> {
    let registered: Vec<&str> = plan
        .sites
        .iter()
        .filter(|s| s.hub == SiteHub::Register)
        .map(|s| s.destination.as_str())
        .collect();
    for site in &plan.sites {
        if let SiteHub::Join { hub } = &site.hub {
            if registered.iter().any(|r| {
                r.trim_end_matches('/')
                    .eq_ignore_ascii_case(hub.trim_end_matches('/'))
            }) {
                continue; // registered by this plan
            }
            find_hub(client, &tenant_root(&site.destination), hub).await?;
        }
    }
    Ok(())
}

/// Registers and joins hubs as planned (after content).
pub async fn hubs<S: StateStore>(
    store: &S,
    job: &JobRecord,
    round: u32,
    plan: &Plan,
    client: &SitesClient,
) -> Result<(), CoordinatorError> {
    let mut records = Vec::new();
    let result = hubs_inner(plan, client, &mut records).await;
    store
        .record_items(job.id, round, HUB_CHUNK, &records)
        .await?;
    result
}

async fn hubs_inner(
    plan: &Plan,
    client: &SitesClient,
    records: &mut Vec<ItemRecord>,
) -> Result<(), CoordinatorError> {
    // Registrations first: the joins may name a hub registered here.
    for (i, site) in plan.sites.iter().enumerate() {
        if site.hub != SiteHub::Register {
            continue;
        }
        let key = format!("hub-register{i:06}");
        match client.register_hub(&site.destination).await {
            Ok((hub, existed)) => records.push(record(
                key,
                &site.source,
                &site.destination,
                &format!("Hub '{}'", hub.title),
                made(existed),
            )),
            Err(e) => {
                records.push(record(
                    key,
                    &site.source,
                    &site.destination,
                    "Hub",
                    failed(&e),
                ));
                return Err(CoordinatorError::Structure(format!(
                    "registering {} as a hub: {e}",
                    site.destination
                )));
            }
        }
    }
    for (i, site) in plan.sites.iter().enumerate() {
        let SiteHub::Join { hub } = &site.hub else {
            continue;
        };
        let key = format!("hub-join{i:06}");
        let hub = find_hub(client, &tenant_root(&site.destination), hub).await?;
        let outcome = async {
            let info = client.site_info(&site.destination).await?;
            if info.hub_site_id == Some(hub.id) {
                return Ok(true);
            }
            client
                .join_hub(&site.destination, hub.id)
                .await
                .map(|()| false)
        }
        .await;
        let name = format!("Joined hub '{}'", hub.title);
        match outcome {
            Ok(existed) => records.push(record(
                key,
                &site.source,
                &site.destination,
                &name,
                made(existed),
            )),
            Err(e) => {
                records.push(record(
                    key,
                    &site.source,
                    &site.destination,
                    &name,
                    failed(&e),
                ));
                return Err(CoordinatorError::Structure(format!(
                    "joining {} to hub '{}': {e}",
                    site.destination, hub.title
                )));
            }
        }
    }
    Ok(())
}
