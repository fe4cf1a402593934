//! Security groups and their rules.
//!
//! The functions at the top are the hooks the rest of the store calls
//! inside its own transactions (ports use groups; networks and ports make
//! sure the project's default group exists).

use std::collections::{HashMap, HashSet};

use super::{Conn, DbRow};
use async_trait::async_trait;
use neutrino_model::policy::Viewer;
use neutrino_model::resources::StandardAttrs;
use neutrino_model::security_groups::{
    self as sg, Direction, EtherType, SecurityGroup, SecurityGroupCreate, SecurityGroupRule, SecurityGroupRuleCreate,
    SecurityGroupUpdate,
};
use neutrino_model::{Error, ProjectId, ResourceKind, Result, SecurityGroupId, SecurityGroupRuleId};

use super::quotas::check_quotas;
use super::revisions::{bump, check_revision, revision_of};
use super::rows::{fetch, get};
use super::txn::Txn;
use super::{Backend, Where, from_json, internal, now_iso, parse_col};
use crate::feed::{ChangeOp, Subject};
use crate::{ListQuery, SecurityGroupStore};

/// The id of the project's default group, if it has one yet.
async fn find_default(conn: &mut Conn, project: &ProjectId) -> Result<Option<SecurityGroupId>> {
    let rows = fetch(
        conn,
        "SELECT id FROM security_groups WHERE project_id = $1 AND is_default".into(),
        &[project.to_string()],
    )
    .await?;
    rows.first().map(|r| parse_col(&get::<String>(r, "id")?, "security group id")).transpose()
}

/// Inserts a group row; `false` when the partial unique index refused a
/// second default group of the project.
async fn insert_group(
    tx: &mut Txn<'_>,
    id: &SecurityGroupId,
    req: &SecurityGroupCreate,
    is_default: bool,
    now: &str,
) -> Result<bool> {
    let done = sqlx::query(concat!(
        "INSERT INTO security_groups (id, seq, project_id, name, description, stateful, is_default, \
         created_at, updated_at, revision_number) \
         VALUES ($1, ",
        next_seq!("security_groups"),
        ", $2, $3, $4, $5, $6, $7, $7, 1) \
         ON CONFLICT DO NOTHING"
    ))
    .bind(id.to_string())
    .bind(req.project_id.as_str())
    .bind(&req.name)
    .bind(&req.description)
    .bind(req.stateful)
    .bind(is_default)
    .bind(now)
    .execute(&mut **tx)
    .await
    .map_err(internal)?;
    let inserted = done.rows_affected() == 1;
    if inserted {
        tx.record(Subject::SecurityGroup(*id), ChangeOp::Created);
    }
    Ok(inserted)
}

/// Inserts a rule; a rule its group already has is refused with the id of
/// the one that exists. The duplicate is found by the unique index without
/// an error (`ON CONFLICT DO NOTHING`): on PostgreSQL a failed statement
/// aborts the transaction, and the existing rule's id is read after it.
async fn insert_rule(tx: &mut Txn<'_>, rule: &SecurityGroupRuleCreate, now: &str) -> Result<SecurityGroupRuleId> {
    let id = SecurityGroupRuleId::new();
    let key = rule.key().to_string();
    let res = sqlx::query(concat!(
        "INSERT INTO security_group_rules (id, seq, security_group_id, project_id, direction, ethertype, protocol, \
         port_range_min, port_range_max, remote_ip_prefix, remote_group_id, description, dedup_key, \
         created_at, updated_at, revision_number) \
         VALUES ($1, ",
        next_seq!("security_group_rules"),
        ", $2, $3, $4, $5, $6, $7, $8, $9, \
         $10, $11, $12, $13, $13, 1) \
         ON CONFLICT (security_group_id, dedup_key) DO NOTHING"
    ))
    .bind(id.to_string())
    .bind(rule.security_group_id.to_string())
    .bind(rule.project_id.as_str())
    .bind(rule.direction.as_str())
    .bind(rule.ethertype.as_str())
    .bind(rule.protocol.as_deref())
    .bind(rule.port_range_min)
    .bind(rule.port_range_max)
    .bind(rule.remote_ip_prefix.map(|n| n.to_string()))
    .bind(rule.remote_group_id.map(|g| g.to_string()))
    .bind(rule.description.as_deref())
    .bind(&key)
    .bind(now)
    .execute(&mut **tx)
    .await
    .map_err(internal)?;
    match res.rows_affected() {
        1 => {
            tx.record(Subject::SecurityGroupRule(id), ChangeOp::Created);
            Ok(id)
        }
        _ => {
            let rows = fetch(
                tx,
                "SELECT id FROM security_group_rules WHERE security_group_id = $1 AND dedup_key = $2".into(),
                &[rule.security_group_id.to_string(), key],
            )
            .await?;
            let existing: String = rows.first().map(|r| get(r, "id")).transpose()?.unwrap_or_default();
            Err(Error::SecurityGroupRuleExists(existing))
        }
    }
}

/// The project's `default` group, created with its rules when missing.
/// The partial unique index keeps it to one even if several writers race
/// (the loser finds the winner's group). Quotas do not apply to it.
pub(crate) async fn ensure_default_group(
    tx: &mut Txn<'_>,
    project: &ProjectId,
    now: &str,
) -> Result<Option<SecurityGroupId>> {
    if let Some(id) = find_default(tx, project).await? {
        return Ok(Some(id));
    }
    let id = SecurityGroupId::new();
    let req = SecurityGroupCreate {
        project_id: project.clone(),
        name: sg::DEFAULT_GROUP_NAME.into(),
        description: sg::DEFAULT_GROUP_DESCRIPTION.into(),
        stateful: true,
    };
    if !insert_group(tx, &id, &req, true, now).await? {
        return find_default(tx, project).await;
    }
    for rule in sg::default_group_rules(id, project) {
        insert_rule(tx, &rule, now).await?;
    }
    Ok(Some(id))
}

/// Fails with `SecurityGroupNotFound` unless every group exists and may be
/// used by ports of `project`.
pub(crate) async fn check_groups_usable(
    conn: &mut Conn,
    project: &ProjectId,
    groups: &[SecurityGroupId],
) -> Result<()> {
    for g in groups {
        let rows = fetch(
            conn,
            "SELECT 1 AS one FROM security_groups WHERE id = $1 AND project_id = $2".into(),
            &[g.to_string(), project.to_string()],
        )
        .await?;
        if rows.is_empty() {
            return Err(Error::not_found(ResourceKind::SecurityGroup, g));
        }
    }
    Ok(())
}

// ---- reading ---------------------------------------------------------------

const GROUP_COLS: &str = "g.id, g.project_id, g.name, g.description, g.stateful, g.is_default, g.tags, \
     g.created_at, g.updated_at, g.revision_number";

const RULE_COLS: &str = "r.id, r.security_group_id, r.project_id, r.direction, r.ethertype, r.protocol, \
     r.port_range_min, r.port_range_max, r.remote_ip_prefix, r.remote_group_id, r.description, \
     r.created_at, r.updated_at, r.revision_number, g.is_default AS belongs_to_default_sg";

fn corrupt(what: &str) -> impl Fn(Error) -> Error + '_ {
    move |_| Error::Internal(format!("corrupt {what} column"))
}

fn rule_from_row(row: &DbRow) -> Result<SecurityGroupRule> {
    let opt_id = |col: &str| -> Result<Option<SecurityGroupId>> {
        get::<Option<String>>(row, col)?.map(|g| parse_col(&g, "security group id")).transpose()
    };
    Ok(SecurityGroupRule {
        id: parse_col(&get::<String>(row, "id")?, "rule id")?,
        security_group_id: parse_col(&get::<String>(row, "security_group_id")?, "security group id")?,
        project_id: ProjectId(get(row, "project_id")?),
        direction: Direction::parse(&get::<String>(row, "direction")?).map_err(corrupt("direction"))?,
        ethertype: EtherType::parse(&get::<String>(row, "ethertype")?).map_err(corrupt("ethertype"))?,
        protocol: get(row, "protocol")?,
        port_range_min: get(row, "port_range_min")?,
        port_range_max: get(row, "port_range_max")?,
        remote_ip_prefix: get::<Option<String>>(row, "remote_ip_prefix")?
            .map(|p| parse_col(&p, "remote prefix"))
            .transpose()?,
        remote_group_id: opt_id("remote_group_id")?,
        description: get(row, "description")?,
        belongs_to_default_sg: get(row, "belongs_to_default_sg")?,
        std: StandardAttrs {
            created_at: get(row, "created_at")?,
            updated_at: get(row, "updated_at")?,
            revision_number: get(row, "revision_number")?,
            tags: Vec::new(),
        },
    })
}

/// Rules matched by a WHERE clause over aliases `r` (the rule) and `g`
/// (its group).
async fn load_rules(conn: &mut Conn, w: &Where) -> Result<Vec<SecurityGroupRule>> {
    let sql = format!(
        "SELECT {RULE_COLS} FROM security_group_rules r JOIN security_groups g ON g.id = r.security_group_id \
         WHERE {} ORDER BY r.seq",
        w.sql()
    );
    fetch(conn, sql, &w.args).await?.iter().map(rule_from_row).collect()
}

/// Groups matched by a WHERE clause over alias `g`, with their rules.
async fn load_groups(conn: &mut Conn, w: &Where) -> Result<Vec<SecurityGroup>> {
    let cond = w.sql();
    let rows =
        fetch(conn, format!("SELECT {GROUP_COLS} FROM security_groups g WHERE {cond} ORDER BY g.seq"), &w.args).await?;
    let mut groups = Vec::with_capacity(rows.len());
    for row in &rows {
        let tags: String = get(row, "tags")?;
        groups.push(SecurityGroup {
            id: parse_col(&get::<String>(row, "id")?, "security group id")?,
            project_id: ProjectId(get(row, "project_id")?),
            name: get(row, "name")?,
            description: get(row, "description")?,
            stateful: get(row, "stateful")?,
            is_default: get(row, "is_default")?,
            rules: Vec::new(),
            std: StandardAttrs {
                created_at: get(row, "created_at")?,
                updated_at: get(row, "updated_at")?,
                revision_number: get(row, "revision_number")?,
                tags: if tags == "[]" { Vec::new() } else { from_json(&tags)? },
            },
        });
    }
    if groups.is_empty() {
        return Ok(groups);
    }
    let index: HashMap<SecurityGroupId, usize> = groups.iter().enumerate().map(|(i, g)| (g.id, i)).collect();
    let rules_where = Where {
        clauses: vec![format!("r.security_group_id IN (SELECT g.id FROM security_groups g WHERE {cond})")],
        args: w.args.clone(),
    };
    for rule in load_rules(conn, &rules_where).await? {
        if let Some(&i) = index.get(&rule.security_group_id) {
            groups[i].rules.push(rule);
        }
    }
    Ok(groups)
}

/// Restricts alias `g` to the groups `viewer` sees.
fn group_visibility(w: &mut Where, viewer: &Viewer) {
    if let Viewer::Project(p) = viewer {
        w.add("g.project_id = {}", &[p.as_str()]);
    }
}

async fn get_group_in(conn: &mut Conn, viewer: &Viewer, id: &SecurityGroupId) -> Result<SecurityGroup> {
    let mut w = Where::default();
    w.add("g.id = {}", &[&id.to_string()]);
    group_visibility(&mut w, viewer);
    load_groups(conn, &w).await?.pop().ok_or_else(|| Error::not_found(ResourceKind::SecurityGroup, id))
}

/// Whether a group exists and `viewer` sees it (without loading its rules).
async fn group_visible(conn: &mut Conn, viewer: &Viewer, id: &SecurityGroupId) -> Result<bool> {
    let mut w = Where::default();
    w.add("g.id = {}", &[&id.to_string()]);
    group_visibility(&mut w, viewer);
    let rows = fetch(conn, format!("SELECT 1 AS one FROM security_groups g WHERE {}", w.sql()), &w.args).await?;
    Ok(!rows.is_empty())
}

async fn get_rule_in(conn: &mut Conn, viewer: &Viewer, id: &SecurityGroupRuleId) -> Result<SecurityGroupRule> {
    let mut w = Where::default();
    w.add("r.id = {}", &[&id.to_string()]);
    group_visibility(&mut w, viewer);
    load_rules(conn, &w).await?.pop().ok_or_else(|| Error::not_found(ResourceKind::SecurityGroupRule, id))
}

async fn group_in_use(conn: &mut Conn, id: &SecurityGroupId) -> Result<bool> {
    let rows = fetch(
        conn,
        "SELECT 1 AS one FROM port_security_groups WHERE security_group_id = $1 LIMIT 1".into(),
        &[id.to_string()],
    )
    .await?;
    Ok(!rows.is_empty())
}

#[async_trait]
impl SecurityGroupStore for Backend {
    async fn ensure_default_security_group(&self, project: &ProjectId) -> Result<SecurityGroupId> {
        // Nearly always there already: look without taking the writer.
        {
            let mut conn = self.readers.acquire().await.map_err(internal)?;
            if let Some(id) = find_default(&mut conn, project).await? {
                return Ok(id);
            }
        }
        let mut w = self.writer.lock().await;
        let mut tx = self.write_txn(&mut w.conn).await?;
        let id = ensure_default_group(&mut tx, project, &now_iso())
            .await?
            .ok_or_else(|| Error::Internal("default security group vanished".into()))?;
        tx.commit().await?;
        Ok(id)
    }

    async fn create_security_groups(&self, requests: Vec<SecurityGroupCreate>) -> Result<Vec<SecurityGroup>> {
        let mut w = self.writer.lock().await;
        let now = now_iso();
        let projects: std::collections::BTreeSet<&ProjectId> = requests.iter().map(|r| &r.project_id).collect();
        // Default groups come first, and stay even if this create fails.
        let mut tx = self.write_txn(&mut w.conn).await?;
        for project in &projects {
            ensure_default_group(&mut tx, project, &now).await?;
        }
        tx.commit().await?;

        let mut tx = self.write_txn(&mut w.conn).await?;
        let each = requests.iter().map(|r| r.project_id.as_str());
        check_quotas(&mut tx, self, each, "security_group").await?;
        let mut created = Vec::with_capacity(requests.len());
        for req in &requests {
            let id = SecurityGroupId::new();
            if !insert_group(&mut tx, &id, req, false, &now).await? {
                return Err(Error::Internal("security group id collision".into()));
            }
            for rule in sg::new_group_rules(id, &req.project_id) {
                insert_rule(&mut tx, &rule, &now).await?;
            }
            created.push(get_group_in(&mut tx, &Viewer::All, &id).await?);
        }
        tx.commit().await?;
        Ok(created)
    }

    async fn get_security_group(&self, viewer: &Viewer, id: &SecurityGroupId) -> Result<SecurityGroup> {
        let mut conn = self.readers.acquire().await.map_err(internal)?;
        get_group_in(&mut conn, viewer, id).await
    }

    async fn list_security_groups(&self, q: &ListQuery) -> Result<Vec<SecurityGroup>> {
        let mut w = Where::default();
        group_visibility(&mut w, &q.viewer);
        w.add_in("g.id", &q.pushdown.ids);
        w.add_in("g.project_id", &q.pushdown.project_ids);
        let mut conn = self.readers.acquire().await.map_err(internal)?;
        load_groups(&mut conn, &w).await
    }

    async fn update_security_group(
        &self,
        id: &SecurityGroupId,
        upd: SecurityGroupUpdate,
        if_match: Option<i64>,
    ) -> Result<SecurityGroup> {
        let mut w = self.writer.lock().await;
        let mut tx = self.write_txn(&mut w.conn).await?;
        let current = get_group_in(&mut tx, &Viewer::All, id).await?;
        check_revision(if_match, current.std.revision_number)?;
        if current.is_default && upd.name.is_some() {
            return Err(Error::SecurityGroupCannotUpdateDefault);
        }
        let stateful = upd.stateful.unwrap_or(current.stateful);
        if stateful != current.stateful && group_in_use(&mut tx, id).await? {
            return Err(Error::SecurityGroupInUse(id.to_string()));
        }
        sqlx::query(
            "UPDATE security_groups SET name = $1, description = $2, stateful = $3, updated_at = $4, \
             revision_number = revision_number + 1 WHERE id = $5",
        )
        .bind(upd.name.as_ref().unwrap_or(&current.name))
        .bind(upd.description.as_ref().unwrap_or(&current.description))
        .bind(stateful)
        .bind(now_iso())
        .bind(id.to_string())
        .execute(&mut *tx)
        .await
        .map_err(internal)?;
        let updated = get_group_in(&mut tx, &Viewer::All, id).await?;
        tx.record(Subject::SecurityGroup(*id), ChangeOp::Updated);
        tx.commit().await?;
        Ok(updated)
    }

    async fn delete_security_group(&self, id: &SecurityGroupId, if_match: Option<i64>) -> Result<()> {
        let mut w = self.writer.lock().await;
        let mut tx = self.write_txn(&mut w.conn).await?;
        let gid = id.to_string();
        let rev = revision_of(&mut tx, "security_groups", &gid)
            .await?
            .ok_or_else(|| Error::not_found(ResourceKind::SecurityGroup, id))?;
        check_revision(if_match, rev)?;
        if group_in_use(&mut tx, id).await? {
            return Err(Error::SecurityGroupInUse(gid));
        }
        // Other groups lose the rules that let this one in.
        let referring = fetch(
            &mut tx,
            "SELECT DISTINCT security_group_id FROM security_group_rules \
             WHERE remote_group_id = $1 AND security_group_id <> $1"
                .into(),
            std::slice::from_ref(&gid),
        )
        .await?;
        let now = now_iso();
        for row in &referring {
            let group: String = get(row, "security_group_id")?;
            bump(&mut tx, "security_groups", &group, &now).await?;
            tx.record(Subject::SecurityGroup(parse_col(&group, "security group id")?), ChangeOp::Updated);
        }
        let rules = fetch(
            &mut tx,
            "DELETE FROM security_group_rules WHERE remote_group_id = $1 OR security_group_id = $1 RETURNING id".into(),
            std::slice::from_ref(&gid),
        )
        .await?;
        for row in &rules {
            tx.record(Subject::SecurityGroupRule(parse_col(&get::<String>(row, "id")?, "rule id")?), ChangeOp::Deleted);
        }
        sqlx::query("DELETE FROM security_groups WHERE id = $1")
            .bind(&gid)
            .execute(&mut *tx)
            .await
            .map_err(internal)?;
        tx.record(Subject::SecurityGroup(*id), ChangeOp::Deleted);
        tx.commit().await?;
        Ok(())
    }

    async fn create_security_group_rules(
        &self,
        viewer: &Viewer,
        requests: Vec<SecurityGroupRuleCreate>,
    ) -> Result<Vec<SecurityGroupRule>> {
        let mut w = self.writer.lock().await;
        let mut tx = self.write_txn(&mut w.conn).await?;
        let projects = requests.iter().map(|r| r.project_id.as_str());
        check_quotas(&mut tx, self, projects, "security_group_rule").await?;
        let mut groups: Vec<SecurityGroupId> = Vec::new();
        let mut checked: HashSet<SecurityGroupId> = HashSet::new();
        for r in &requests {
            for g in std::iter::once(r.security_group_id).chain(r.remote_group_id) {
                if checked.insert(g) && !group_visible(&mut tx, viewer, &g).await? {
                    return Err(Error::not_found(ResourceKind::SecurityGroup, g));
                }
            }
            if !groups.contains(&r.security_group_id) {
                groups.push(r.security_group_id);
            }
        }
        let mut keys = HashSet::new();
        if !requests.iter().all(|r| keys.insert(r.key())) {
            return Err(Error::DuplicateSecurityGroupRuleInPost);
        }
        let now = now_iso();
        let mut ids = Vec::with_capacity(requests.len());
        for r in &requests {
            ids.push(insert_rule(&mut tx, r, &now).await?);
        }
        for g in &groups {
            bump(&mut tx, "security_groups", &g.to_string(), &now).await?;
            tx.record(Subject::SecurityGroup(*g), ChangeOp::Updated);
        }
        let mut created = Vec::with_capacity(ids.len());
        for id in &ids {
            created.push(get_rule_in(&mut tx, &Viewer::All, id).await?);
        }
        tx.commit().await?;
        Ok(created)
    }

    async fn get_security_group_rule(&self, viewer: &Viewer, id: &SecurityGroupRuleId) -> Result<SecurityGroupRule> {
        let mut conn = self.readers.acquire().await.map_err(internal)?;
        get_rule_in(&mut conn, viewer, id).await
    }

    async fn list_security_group_rules(&self, q: &ListQuery, groups: &[String]) -> Result<Vec<SecurityGroupRule>> {
        let mut w = Where::default();
        group_visibility(&mut w, &q.viewer);
        w.add_in("r.id", &q.pushdown.ids);
        w.add_in("r.project_id", &q.pushdown.project_ids);
        w.add_in("r.security_group_id", groups);
        let mut conn = self.readers.acquire().await.map_err(internal)?;
        load_rules(&mut conn, &w).await
    }

    async fn delete_security_group_rule(&self, id: &SecurityGroupRuleId, if_match: Option<i64>) -> Result<()> {
        let mut w = self.writer.lock().await;
        let mut tx = self.write_txn(&mut w.conn).await?;
        let current = get_rule_in(&mut tx, &Viewer::All, id).await?;
        check_revision(if_match, current.std.revision_number)?;
        sqlx::query("DELETE FROM security_group_rules WHERE id = $1")
            .bind(id.to_string())
            .execute(&mut *tx)
            .await
            .map_err(internal)?;
        bump(&mut tx, "security_groups", &current.security_group_id.to_string(), &now_iso()).await?;
        tx.record(Subject::SecurityGroupRule(*id), ChangeOp::Deleted);
        tx.record(Subject::SecurityGroup(current.security_group_id), ChangeOp::Updated);
        tx.commit().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    macro_rules! store {
        () => {
            match super::super::test_store().await {
                Some(s) => s,
                None => return,
            }
        };
    }

    #[tokio::test]
    async fn the_schema_allows_one_default_group_per_project() {
        let (_dir, s) = store!();
        let project = ProjectId("p".into());
        let first = s.ensure_default_security_group(&project).await.unwrap();
        assert_eq!(s.ensure_default_security_group(&project).await.unwrap(), first);
        // A writer that missed the first one loses at the unique index and
        // then finds the winner's group.
        let mut w = s.writer.lock().await;
        let mut tx = s.write_txn(&mut w.conn).await.unwrap();
        let req = SecurityGroupCreate {
            project_id: project.clone(),
            name: sg::DEFAULT_GROUP_NAME.into(),
            description: String::new(),
            stateful: true,
        };
        assert!(!insert_group(&mut tx, &SecurityGroupId::new(), &req, true, "now").await.unwrap());
        assert!(insert_group(&mut tx, &SecurityGroupId::new(), &req, false, "now").await.unwrap());
        assert_eq!(ensure_default_group(&mut tx, &project, "now").await.unwrap(), Some(first));
        let other = ensure_default_group(&mut tx, &ProjectId("q".into()), "now").await.unwrap().unwrap();
        assert_ne!(other, first);
        tx.commit().await.unwrap();
        drop(w);
        let g = s.get_security_group(&Viewer::All, &first).await.unwrap();
        assert!(g.is_default);
        assert_eq!(g.rules.len(), 4);
        assert!(g.rules.iter().all(|r| r.belongs_to_default_sg));
    }

    #[tokio::test]
    async fn concurrent_first_requests_make_one_default_group() {
        let (_dir, s) = store!();
        let s = std::sync::Arc::new(s);
        let mut tasks = Vec::new();
        for i in 0..32 {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                s.ensure_default_security_group(&ProjectId(format!("p{}", i % 4))).await.unwrap()
            }));
        }
        let mut ids = HashSet::new();
        for t in tasks {
            ids.insert(t.await.unwrap());
        }
        assert_eq!(ids.len(), 4);
        let all = s.list_security_groups(&ListQuery::new(Viewer::All)).await.unwrap();
        assert_eq!(all.len(), 4);
        assert!(all.iter().all(|g| g.is_default && g.name == "default" && g.rules.len() == 4));
    }

    #[tokio::test]
    async fn rules_that_name_a_deleted_group_go_with_it() {
        let (_dir, s) = store!();
        let project = ProjectId("p".into());
        let req = |name: &str| SecurityGroupCreate {
            project_id: project.clone(),
            name: name.into(),
            description: String::new(),
            stateful: true,
        };
        let groups = s.create_security_groups(vec![req("a"), req("b")]).await.unwrap();
        let (a, b) = (groups[0].id, groups[1].id);
        let mut rule = sg::new_group_rules(a, &project).remove(0);
        rule.direction = Direction::Ingress;
        rule.remote_group_id = Some(b);
        s.create_security_group_rules(&Viewer::All, vec![rule]).await.unwrap();
        assert_eq!(s.get_security_group(&Viewer::All, &a).await.unwrap().rules.len(), 3);
        s.delete_security_group(&b, None).await.unwrap();
        let a_now = s.get_security_group(&Viewer::All, &a).await.unwrap();
        assert_eq!(a_now.rules.len(), 2);
        assert_eq!(a_now.std.revision_number, 3);
    }
}
