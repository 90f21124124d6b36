//! `easy-note rules check FILE` and `easy-note rules diff OLD NEW`: a
//! governance document checked before it is published, the way every
//! process would check it, and then some (the conflicts between rules that
//! each validate alone; see `governance::rules::check`).

use std::{collections::BTreeMap, fmt::Write as _, path::Path, time::Duration};

use anyhow::Context as _;
use easynote_shared::{
    config::Env,
    discovery::{Discovery, DiscoveryConfig, Instance},
    governance::rules::{self, Conflict, Rules},
};

/// What a check found: the report to print and whether it passed.
#[derive(Debug)]
pub struct Report {
    /// Effective rules, conflicts, verdict.
    pub text: String,
    /// No refusal and no conflict.
    pub ok: bool,
}

/// Reads and parses a document as a process would; the error names the
/// file and the path of the bad key. Answers the rules and their revision.
pub fn load(path: &Path) -> anyhow::Result<(Rules, String)> {
    let document =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let rules = Rules::parse(&document).with_context(|| {
        format!(
            "{} is refused: every process would keep its last good rules",
            path.display()
        )
    })?;
    Ok((rules, rules::version_of(&document)))
}

/// `rules check` of the document at `path`, loaded (`rules`, `revision`):
/// the effective rules per route, service and method, then every conflict.
/// With `instances` (what the registry holds), lanes are checked against
/// the instances that would serve them.
pub fn check(
    path: &Path,
    (rules, revision): &(Rules, String),
    instances: Option<&BTreeMap<String, Vec<Instance>>>,
) -> Report {
    let mut text = String::new();
    let _ = writeln!(text, "{}: valid, revision {revision}\n", path.display());
    let _ = writeln!(text, "Effective rules:");
    for (key, value) in rules.effective() {
        let _ = writeln!(text, "  {key} = {value}");
    }
    let mut conflicts: Vec<Conflict> = rules.conflicts();
    match instances {
        Some(instances) => conflicts.extend(rules.lane_conflicts(instances)),
        None if !rules.routing.is_empty() => {
            let _ = writeln!(
                text,
                "\nLanes were not checked against registered instances (pass --registry)."
            );
        }
        None => {}
    }
    if !rules.faults.is_empty() {
        let _ = writeln!(
            text,
            "\nNote: faults are refused in production unless EASYNOTE_ALLOW_FAULTS=true."
        );
    }
    if conflicts.is_empty() {
        let _ = writeln!(text, "\nNo conflicts.");
    } else {
        let _ = writeln!(text, "\n{} conflict(s):", conflicts.len());
        for conflict in &conflicts {
            let _ = writeln!(text, "  {conflict}");
        }
    }
    Report {
        text,
        ok: conflicts.is_empty(),
    }
}

/// `rules diff`: what would change in effect, setting by setting.
pub fn diff(old: &Path, new: &Path) -> anyhow::Result<Report> {
    let (old_rules, old_revision) = load(old)?;
    let (new_rules, new_revision) = load(new)?;
    let changes = rules::diff(&old_rules, &new_rules);
    let mut text = format!(
        "{} (revision {old_revision}) -> {} (revision {new_revision})\n",
        old.display(),
        new.display()
    );
    if changes.is_empty() {
        text.push_str("No change in effect.\n");
    }
    for change in &changes {
        let _ = writeln!(text, "{change}");
    }
    Ok(Report { text, ok: true })
}

/// The instances of every service `rules` route, from the registry this
/// environment configures (as the services would find it), after giving
/// it `wait` to answer.
pub async fn registered_instances(
    rules: &Rules,
    wait: Duration,
) -> anyhow::Result<BTreeMap<String, Vec<Instance>>> {
    let config = DiscoveryConfig::from_env(&Env::from_process())?;
    let discovery = Discovery::from_config(&config).await?;
    let mut found = BTreeMap::new();
    for service in rules.routing.keys() {
        let mut set = discovery.subscribe(service).await?;
        // The first answer may come after the subscription: wait for a
        // non-empty set, or `wait`, whichever is first.
        let _ = tokio::time::timeout(wait, set.wait_for(|instances| !instances.is_empty())).await;
        let instances = set.borrow().to_vec();
        found.insert(service.clone(), instances);
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checked(file: &Path, instances: Option<&BTreeMap<String, Vec<Instance>>>) -> Report {
        check(file, &load(file).expect("valid"), instances)
    }

    fn document(text: &str) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().expect("a temporary file");
        std::fs::write(file.path(), text).expect("write the document");
        file
    }

    #[test]
    fn check_prints_the_effective_rules_and_fails_on_a_conflict() {
        let fine = document("{}");
        let report = checked(fine.path(), None);
        assert!(report.ok, "{}", report.text);
        assert!(report.text.contains("valid, revision "), "{}", report.text);
        assert!(
            report
                .text
                .contains("  gateway.route.POST /v1/user/login.deadline = 5000 ms"),
            "{}",
            report.text
        );
        assert!(report.text.ends_with("No conflicts.\n"), "{}", report.text);

        let tight = document(r#"{"gateway": {"timeouts_ms": {"GET /v1/note/query": 1500}}}"#);
        let report = checked(tight.path(), None);
        assert!(!report.ok);
        assert!(report.text.contains("3 conflict(s):"), "{}", report.text);

        let lanes = document(
            r#"{"routing": {"easy-note-note": {"lanes": [{"name": "c",
                "match": {"header": "x-l", "equals": "c"}, "instances": {"lane": "c"}}]}}}"#,
        );
        let report = checked(lanes.path(), None);
        assert!(report.text.contains("pass --registry"), "{}", report.text);
        let none = BTreeMap::new();
        let report = checked(lanes.path(), Some(&none));
        assert!(!report.ok, "no instance has lane=c: {}", report.text);
    }

    #[test]
    fn a_refused_document_names_the_file_and_the_key() {
        let bad = document(r#"{"gateway": {"max_in_flight": 0}}"#);
        let err = load(bad.path()).expect_err("refused");
        let said = format!("{err:#}");
        assert!(said.contains("is refused"), "{said}");
        assert!(said.contains("gateway.max_in_flight"), "{said}");
        assert!(load(Path::new("/no/such/rules.json")).is_err());
    }

    #[test]
    fn diff_lists_the_changes_in_effect_with_both_revisions() {
        let old = document("{}");
        let new = document(r#"{"gateway": {"max_in_flight": 10}}"#);
        let report = diff(old.path(), new.path()).expect("both valid");
        assert!(
            report.text.contains("~ gateway.max_in_flight: 1024 -> 10"),
            "{}",
            report.text
        );
        assert_eq!(
            report.text.matches("(revision ").count(),
            2,
            "{}",
            report.text
        );
        let same = diff(old.path(), old.path()).expect("valid");
        assert!(same.text.contains("No change in effect."), "{}", same.text);
    }
}
