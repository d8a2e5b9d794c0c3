//! Destination site URLs of a plan: proposals, and the checks a hand-edited
//! plan must pass before anything is created at the destination.
//!
//! Rules (SharePoint Online):
//! - a site collection lives at `{tenant}/sites/{name}` or `{tenant}/teams/{name}`;
//! - a subsite is its parent's URL plus one segment;
//! - a URL segment has no spaces and none of `" * : < > ? \ | # % & ~ { }`,
//!   does not start or end with `.`, and is at most 128 characters;
//! - every site of a plan is in one tenant (one scheme + host), and no two
//!   planned sites share a URL (compared case-insensitively, as SharePoint does).

use std::collections::HashMap;

use crate::model::{Plan, SiteAction, SiteHub};

/// One thing wrong with a plan, naming the site or library line to edit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlanProblem {
    /// Index into `plan.sites`, when the problem is a site's.
    pub site: Option<usize>,
    /// Index into `plan.libraries`, when the problem is a library's.
    pub library: Option<usize>,
    pub message: String,
}

impl std::fmt::Display for PlanProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.site, self.library) {
            (Some(s), _) => write!(f, "sites[{s}]: {}", self.message),
            (None, Some(l)) => write!(f, "libraries[{l}]: {}", self.message),
            _ => f.write_str(&self.message),
        }
    }
}

const BAD_SEGMENT_CHARS: &[char] = &[
    '"', '*', ':', '<', '>', '?', '\\', '|', '#', '%', '&', '~', '{', '}', ' ',
];
const MAX_SEGMENT: usize = 128;

/// `https://host[:port]` and the path segments of an absolute URL; `None`
/// when it is not an absolute http(s) URL without query or fragment.
pub fn split_url(url: &str) -> Option<(String, Vec<&str>)> {
    let (scheme, rest) = url.split_once("://")?;
    if !scheme.eq_ignore_ascii_case("https") && !scheme.eq_ignore_ascii_case("http") {
        return None;
    }
    if rest.contains(['?', '#']) {
        return None;
    }
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    if host.is_empty() {
        return None;
    }
    let segments = path
        .trim_end_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    Some((
        format!(
            "{}://{}",
            scheme.to_ascii_lowercase(),
            host.to_ascii_lowercase()
        ),
        segments,
    ))
}

/// The last path segment of a URL (`""` for a tenant root).
pub fn leaf(url: &str) -> &str {
    let path = match url.split_once("://") {
        Some((_, rest)) => rest.find('/').map_or("", |i| &rest[i..]),
        None => url,
    };
    path.trim_end_matches('/').rsplit('/').next().unwrap_or("")
}

/// `{tenant}/sites/{leaf}`: the proposal for a promoted subsite.
pub fn site_collection_url(tenant_root: &str, leaf: &str) -> String {
    format!(
        "{}/sites/{}",
        tenant_root.trim_end_matches('/'),
        sanitize_segment(leaf)
    )
}

/// `{parent}/{leaf}`: a subsite's URL.
pub fn subsite_url(parent: &str, leaf: &str) -> String {
    format!(
        "{}/{}",
        parent.trim_end_matches('/'),
        sanitize_segment(leaf)
    )
}

/// A proposal-safe URL segment: invalid characters become `-`.
pub fn sanitize_segment(s: &str) -> String {
    let out: String = s
        .chars()
        .map(|c| {
            if BAD_SEGMENT_CHARS.contains(&c) || c.is_control() {
                '-'
            } else {
                c
            }
        })
        .collect();
    let out = out.trim_matches('.').to_string();
    if out.is_empty() {
        "site".to_string()
    } else {
        out.chars().take(MAX_SEGMENT).collect()
    }
}

fn segment_problem(seg: &str) -> Option<String> {
    if let Some(c) = seg
        .chars()
        .find(|c| BAD_SEGMENT_CHARS.contains(c) || c.is_control())
    {
        let shown = if c == ' ' {
            "a space".to_string()
        } else {
            format!("'{c}'")
        };
        return Some(format!(
            "the URL segment '{seg}' contains {shown}, which a SharePoint site URL cannot have"
        ));
    }
    if seg.starts_with('.') || seg.ends_with('.') {
        return Some(format!(
            "the URL segment '{seg}' cannot start or end with a period"
        ));
    }
    if seg.chars().count() > MAX_SEGMENT {
        return Some(format!(
            "the URL segment '{seg}' is longer than {MAX_SEGMENT} characters"
        ));
    }
    None
}

fn key(url: &str) -> String {
    url.trim_end_matches('/').to_lowercase()
}

/// Checks every destination URL of `plan`; returns every problem found, each
/// naming the line to edit. Nothing here does I/O: existing sites at the
/// destination are checked when the plan runs.
pub fn validate(plan: &Plan) -> Result<(), Vec<PlanProblem>> {
    let mut problems = Vec::new();
    let site_problem = |i: usize, message: String| PlanProblem {
        site: Some(i),
        library: None,
        message,
    };
    let mut origin: Option<(String, usize)> = None;
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (i, site) in plan.sites.iter().enumerate() {
        let dest = site.destination.trim();
        let Some((host, segments)) = split_url(dest) else {
            problems.push(site_problem(
                i,
                format!(
                    "'{dest}' is not an absolute http(s) URL without query or fragment (source {})",
                    site.source
                ),
            ));
            continue;
        };
        match &origin {
            None => origin = Some((host.clone(), i)),
            Some((o, first)) if *o != host => problems.push(site_problem(
                i,
                format!("'{dest}' is in another tenant than sites[{first}] ({o}): one plan migrates into one tenant"),
            )),
            Some(_) => {}
        }
        if let Some(p) = segments.iter().find_map(|s| segment_problem(s)) {
            problems.push(site_problem(i, p));
        }
        if let Some(other) = seen.insert(key(dest), i) {
            problems.push(site_problem(
                i,
                format!("'{dest}' is also the destination of sites[{other}] (source {}): give each site its own URL", plan.sites[other].source),
            ));
        }
        match &site.action {
            SiteAction::Existing => {}
            SiteAction::SiteCollection { .. } => {
                let managed = segments.len() == 2
                    && (segments[0].eq_ignore_ascii_case("sites")
                        || segments[0].eq_ignore_ascii_case("teams"));
                if !managed {
                    problems.push(site_problem(
                        i,
                        format!("'{dest}' cannot be a new site collection: use {host}/sites/NAME or {host}/teams/NAME"),
                    ));
                }
            }
            SiteAction::Subsite { parent, .. } => match plan.sites.get(*parent) {
                Some(p) if *parent < i => {
                    let want_prefix = format!("{}/", key(&p.destination));
                    let ok = key(dest)
                        .strip_prefix(&want_prefix)
                        .is_some_and(|rest| !rest.is_empty() && !rest.contains('/'));
                    if !ok {
                        problems.push(site_problem(
                            i,
                            format!(
                                "the subsite '{dest}' must be directly under its parent's destination '{}' (sites[{parent}]): edit one of them",
                                p.destination
                            ),
                        ));
                    }
                }
                _ => problems.push(site_problem(
                    i,
                    format!("its parent sites[{parent}] does not come before it in the plan"),
                )),
            },
        }
        if let SiteHub::Join { hub } = &site.hub {
            if hub.trim().is_empty() {
                problems.push(site_problem(
                    i,
                    "the hub to join is empty: name a hub by title or URL".into(),
                ));
            }
        }
    }
    for (l, lib) in plan.libraries.iter().enumerate() {
        if let Some(s) = lib.site {
            if s >= plan.sites.len() {
                problems.push(PlanProblem {
                    site: None,
                    library: Some(l),
                    message: format!("names sites[{s}], which the plan does not have"),
                });
            }
        }
        if let Some(title) = &lib.destination.library {
            if let Err(p) = crate::names::check_name(title, false, true) {
                problems.push(PlanProblem {
                    site: None,
                    library: Some(l),
                    message: format!("the destination library '{title}': {}", p.message()),
                });
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

/// Points every library at its planned site's (possibly edited) URL.
pub fn apply_site_urls(plan: &mut Plan) {
    for lib in &mut plan.libraries {
        if let Some(site) = lib.site.and_then(|s| plan.sites.get(s)) {
            lib.destination.site_url = site.destination.trim().trim_end_matches('/').to_string();
        }
    }
}

#[cfg(test)]
#[rustfmt::skip]
mod tests {
    use super::*;
    use crate::model::*;

    fn site(dest: &str, action: SiteAction) -> SitePlan {
        SitePlan { task: 0, source: format!("https://src/{}", leaf(dest)), destination: dest.into(), title: "T".into(), action, hub: SiteHub::None }
    }
    fn coll() -> SiteAction { SiteAction::SiteCollection { template: "STS#3".into() } }
    fn sub(parent: usize) -> SiteAction { SiteAction::Subsite { parent, template: "STS#3".into() } }
    fn plan(sites: Vec<SitePlan>) -> Plan {
        Plan { schema_version: 1, job: JobId::new(), sites, libraries: vec![] }
    }

    /// One row: the sites, and the problems expected (site index + a phrase).
    fn check(row: &str, sites: Vec<SitePlan>, expected: &[(usize, &str)]) {
        let got = validate(&plan(sites)).err().unwrap_or_default();
        assert_eq!(got.len(), expected.len(), "row {row}: {got:#?}");
        for ((site, phrase), p) in expected.iter().zip(&got) {
            assert_eq!(p.site, Some(*site), "row {row}: {p}");
            assert!(p.message.contains(phrase), "row {row}: {p} should mention {phrase:?}");
        }
    }

    const T: &str = "https://contoso.sharepoint.com";

    #[test]
    fn valid_plans_pass() {
        check("classic", vec![
            site(&format!("{T}/sites/hr"), SiteAction::Existing),
            site(&format!("{T}/sites/hr/benefits"), sub(0)),
            site(&format!("{T}/sites/hr/benefits/2024"), sub(1)),
        ], &[]);
        check("modern", vec![
            site(&format!("{T}/sites/hr"), SiteAction::Existing),
            site(&format!("{T}/sites/benefits"), coll()),
            site(&format!("{T}/teams/payroll"), coll()),
            site(&format!("{T}/sites/benefits/archive"), sub(1)),
        ], &[]);
        check("case and trailing slash", vec![
            site(&format!("{T}/Sites/HR/"), SiteAction::Existing),
            site(&format!("{T}/sites/hr/Team"), sub(0)),
        ], &[]);
        check("emulator on a port", vec![
            site("http://127.0.0.1:8080/sites/a", SiteAction::Existing),
            site("http://127.0.0.1:8080/sites/b", coll()),
        ], &[]);
    }

    #[test]
    fn bad_urls_are_named() {
        check("not a URL", vec![site("contoso/sites/x", SiteAction::Existing)], &[(0, "not an absolute")]);
        check("ftp", vec![site("ftp://contoso/sites/x", SiteAction::Existing)], &[(0, "not an absolute")]);
        check("query", vec![site(&format!("{T}/sites/x?a=1"), SiteAction::Existing)], &[(0, "not an absolute")]);
        check("space", vec![site(&format!("{T}/sites/my site"), coll())], &[(0, "a space")]);
        check("hash", vec![site(&format!("{T}/sites/a#b"), coll())], &[(0, "not an absolute")]);
        check("ampersand", vec![site(&format!("{T}/sites/r&d"), coll())], &[(0, "'&'")]);
        check("period", vec![site(&format!("{T}/sites/.hidden"), coll())], &[(0, "period")]);
        check("too long", vec![site(&format!("{T}/sites/{}", "a".repeat(129)), coll())], &[(0, "longer than 128")]);
        check("128 is fine", vec![site(&format!("{T}/sites/{}", "a".repeat(128)), coll())], &[]);
    }

    #[test]
    fn site_collections_need_a_managed_path() {
        check("root", vec![site(T, coll())], &[(0, "/sites/NAME")]);
        check("deep", vec![site(&format!("{T}/sites/a/b"), coll())], &[(0, "/sites/NAME")]);
        check("other path", vec![site(&format!("{T}/projects/a"), coll())], &[(0, "/sites/NAME")]);
    }

    #[test]
    fn subsites_stay_under_their_parent() {
        let root = site(&format!("{T}/sites/hr"), SiteAction::Existing);
        check("elsewhere", vec![root.clone(), site(&format!("{T}/sites/other/x"), sub(0))], &[(1, "directly under")]);
        check("two levels down", vec![root.clone(), site(&format!("{T}/sites/hr/a/b"), sub(0))], &[(1, "directly under")]);
        check("same as parent", vec![root.clone(), site(&format!("{T}/sites/hr"), sub(0))], &[(1, "also the destination"), (1, "directly under")]);
        check("prefix but not a child", vec![root.clone(), site(&format!("{T}/sites/hrx"), sub(0))], &[(1, "directly under")]);
        check("parent after child", vec![site(&format!("{T}/sites/hr/a"), sub(1)), root], &[(0, "does not come before")]);
    }

    #[test]
    fn collisions_and_tenants() {
        check("same URL twice", vec![
            site(&format!("{T}/sites/hr"), SiteAction::Existing),
            site(&format!("{T}/sites/team"), coll()),
            site(&format!("{T}/SITES/Team/"), coll()),
        ], &[(2, "also the destination of sites[1]")]);
        check("two tenants", vec![
            site(&format!("{T}/sites/hr"), SiteAction::Existing),
            site("https://fabrikam.sharepoint.com/sites/x", coll()),
        ], &[(1, "another tenant")]);
    }

    #[test]
    fn proposals_are_valid() {
        assert_eq!(site_collection_url(T, "R&D team"), format!("{T}/sites/R-D-team"));
        assert_eq!(subsite_url(&format!("{T}/sites/a/"), "x"), format!("{T}/sites/a/x"));
        assert_eq!(leaf(&format!("{T}/sites/a/")), "a");
        assert_eq!(leaf(T), "");
        assert_eq!(sanitize_segment("..."), "site");
        check("sanitized proposal", vec![
            site(&format!("{T}/sites/hr"), SiteAction::Existing),
            site(&site_collection_url(T, "~weird: name?"), coll()),
        ], &[]);
    }

    #[test]
    fn libraries_follow_edited_sites() {
        let mut p = plan(vec![site(&format!("{T}/sites/new-name"), coll())]);
        p.libraries.push(LibraryPlan {
            task: 0,
            source: SourceLibrary::FileShare { path: "/x".into() },
            destination: Destination { site_url: format!("{T}/sites/old"), library: Some("Documents".into()), subfolder: None },
            site: Some(0), items: None, bytes: None,
        });
        apply_site_urls(&mut p);
        assert_eq!(p.libraries[0].destination.site_url, format!("{T}/sites/new-name"));
        p.libraries[0].site = Some(5);
        p.libraries[0].destination.library = Some("bad|name".into());
        let problems = validate(&p).unwrap_err();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems.iter().all(|x| x.library == Some(0)));
    }
}
