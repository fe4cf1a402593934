//! Networks, their segments and their sharing grants.

use std::collections::BTreeSet;

use neutrino_model::policy::Viewer;
use neutrino_model::resources::*;
use neutrino_model::segments::{self, NetworkType, SegmentConfig, SegmentRequest};
use neutrino_model::{Error, NetworkId, ResourceKind, Result, SegmentId};
use sqlx::sqlite::SqliteConnection;

use super::rows::{fetch, get, load_networks, load_segments};
use super::{SqliteStore, Where, begin, check_revision, internal, is_unique_violation, now_iso, to_json};
use crate::{ListQuery, Pushdown};

/// Restricts alias `n` to what `viewer` may see: own networks and networks
/// shared with (or external to) the viewer's project or everyone.
pub(crate) fn network_visibility(w: &mut Where, viewer: &Viewer) {
    if let Viewer::Project(p) = viewer {
        w.add(
            "(n.project_id = {} OR EXISTS (SELECT 1 FROM network_rbacs r WHERE r.network_id = n.id AND r.target_project IN ('*', {})))",
            &[p.as_str(), p.as_str()],
        );
    }
}

fn network_pushdown(w: &mut Where, p: &Pushdown) {
    w.add_in("n.id", &p.ids);
    w.add_in("n.project_id", &p.project_ids);
}

pub(crate) async fn get_network_in(conn: &mut SqliteConnection, viewer: &Viewer, id: &NetworkId) -> Result<Network> {
    let mut w = Where::default();
    w.add("n.id = {}", &[&id.to_string()]);
    network_visibility(&mut w, viewer);
    load_networks(conn, &w).await?.pop().ok_or_else(|| Error::not_found(ResourceKind::Network, id))
}

/// The key columns that make a segment unique (see the schema).
fn segment_keys(t: NetworkType, physnet: Option<&str>, id: Option<i64>) -> (String, i64) {
    (physnet.unwrap_or("").to_string(), if t == NetworkType::Flat { 0 } else { id.unwrap_or(0) })
}

async fn segment_taken(
    conn: &mut SqliteConnection,
    t: NetworkType,
    physnet: Option<&str>,
    id: Option<i64>,
) -> Result<bool> {
    let (pk, sk) = segment_keys(t, physnet, id);
    let rows = fetch(
        conn,
        "SELECT 1 AS one FROM segments WHERE network_type = $1 AND physnet_key = $2 AND segmentation_key = $3".into(),
        &[t.as_str().to_string(), pk, sk.to_string()],
    )
    .await?;
    Ok(!rows.is_empty())
}

fn in_use_error(t: NetworkType, physnet: Option<&str>, id: Option<i64>) -> Error {
    match t {
        NetworkType::Flat => Error::FlatNetworkInUse(physnet.unwrap_or_default().to_string()),
        NetworkType::Vlan => {
            Error::VlanIdInUse { vlan: id.unwrap_or(0), physnet: physnet.unwrap_or_default().to_string() }
        }
        NetworkType::Vxlan => Error::TunnelIdInUse(id.unwrap_or(0)),
    }
}

/// A random free id from `ranges` for segments of type `t` on `physnet`:
/// one probe of a uniformly random id first (nearly always enough), then a
/// uniform choice among the free ids if that one was taken.
async fn choose_segmentation_id(
    conn: &mut SqliteConnection,
    t: NetworkType,
    physnet: Option<&str>,
    ranges: &[segments::IdRange],
) -> Result<Option<i64>> {
    let Some(probe) = segments::choose_free_id(ranges, &BTreeSet::new(), &mut rand::rng()) else {
        return Ok(None);
    };
    if !segment_taken(conn, t, physnet, Some(probe)).await? {
        return Ok(Some(probe));
    }
    let rows = fetch(
        conn,
        "SELECT segmentation_key FROM segments WHERE network_type = $1 AND physnet_key = $2".into(),
        &[t.as_str().to_string(), physnet.unwrap_or("").to_string()],
    )
    .await?;
    let used: BTreeSet<i64> = rows.iter().map(|r| get::<i64>(r, "segmentation_key")).collect::<Result<_>>()?;
    Ok(segments::choose_free_id(ranges, &used, &mut rand::rng()))
}

/// Resolves a request (or, with `None`, the project-network defaults) to a
/// concrete free segment.
async fn resolve_segment(
    conn: &mut SqliteConnection,
    cfg: &SegmentConfig,
    req: Option<&SegmentRequest>,
) -> Result<SegmentRequest> {
    let Some(req) = req else {
        for t in &cfg.project_network_types {
            match t {
                NetworkType::Vxlan => {
                    if let Some(id) = choose_segmentation_id(conn, *t, None, &cfg.vni_ranges).await? {
                        return Ok(SegmentRequest {
                            network_type: *t,
                            physical_network: None,
                            segmentation_id: Some(id),
                        });
                    }
                }
                NetworkType::Vlan => {
                    for p in cfg.vlan_physnets.iter().filter(|p| !p.ranges.is_empty()) {
                        if let Some(id) = choose_segmentation_id(conn, *t, Some(&p.physnet), &p.ranges).await? {
                            return Ok(SegmentRequest {
                                network_type: *t,
                                physical_network: Some(p.physnet.clone()),
                                segmentation_id: Some(id),
                            });
                        }
                    }
                }
                NetworkType::Flat => {}
            }
        }
        return Err(Error::NoNetworkAvailable);
    };
    segments::validate_segment_request(cfg, req)?;
    let mut resolved = req.clone();
    if req.segmentation_id.is_none() {
        let ranges = match req.network_type {
            NetworkType::Flat => None,
            NetworkType::Vxlan => Some(cfg.vni_ranges.clone()),
            NetworkType::Vlan => Some(
                cfg.vlan_physnet(req.physical_network.as_deref().unwrap_or(""))
                    .map(|p| p.ranges.clone())
                    .unwrap_or_default(),
            ),
        };
        if let Some(ranges) = ranges {
            let id = choose_segmentation_id(conn, req.network_type, req.physical_network.as_deref(), &ranges)
                .await?
                .ok_or(Error::NoNetworkAvailable)?;
            resolved.segmentation_id = Some(id);
        }
    }
    if segment_taken(conn, resolved.network_type, resolved.physical_network.as_deref(), resolved.segmentation_id)
        .await?
    {
        return Err(in_use_error(
            resolved.network_type,
            resolved.physical_network.as_deref(),
            resolved.segmentation_id,
        ));
    }
    Ok(resolved)
}

async fn insert_segment(
    conn: &mut SqliteConnection,
    network: &NetworkId,
    seg: &SegmentRequest,
    name: Option<&str>,
    description: &str,
    now: &str,
) -> Result<SegmentId> {
    let id = SegmentId::new();
    let (pk, sk) = segment_keys(seg.network_type, seg.physical_network.as_deref(), seg.segmentation_id);
    let res = sqlx::query(
        "INSERT INTO segments (id, network_id, name, description, network_type, physical_network, segmentation_id, \
         physnet_key, segmentation_key, seq, created_at, updated_at, revision_number) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, \
         (SELECT COALESCE(MAX(seq), 0) + 1 FROM segments WHERE network_id = $2), $10, $10, 1)",
    )
    .bind(id.to_string())
    .bind(network.to_string())
    .bind(name)
    .bind(description)
    .bind(seg.network_type.as_str())
    .bind(seg.physical_network.as_deref())
    .bind(seg.segmentation_id)
    .bind(pk)
    .bind(sk)
    .bind(now)
    .execute(&mut *conn)
    .await;
    match res {
        Ok(_) => Ok(id),
        Err(e) if is_unique_violation(&e) => {
            Err(in_use_error(seg.network_type, seg.physical_network.as_deref(), seg.segmentation_id))
        }
        Err(e) => Err(internal(e)),
    }
}

async fn set_rbac(conn: &mut SqliteConnection, network: &NetworkId, owner: &str, action: &str, on: bool) -> Result<()> {
    if on {
        sqlx::query(
            "INSERT INTO network_rbacs (id, network_id, project_id, action, target_project) VALUES ($1, $2, $3, $4, '*') \
             ON CONFLICT DO NOTHING",
        )
        .bind(uuid::Uuid::new_v4().to_string())
        .bind(network.to_string())
        .bind(owner)
        .bind(action)
        .execute(&mut *conn)
        .await
        .map_err(internal)?;
    } else {
        sqlx::query("DELETE FROM network_rbacs WHERE network_id = $1 AND action = $2 AND target_project = '*'")
            .bind(network.to_string())
            .bind(action)
            .execute(&mut *conn)
            .await
            .map_err(internal)?;
    }
    Ok(())
}

/// Bumps a resource's revision (a dependent row changed).
pub(crate) async fn bump(conn: &mut SqliteConnection, table: &str, id: &str, now: &str) -> Result<()> {
    let sql = format!("UPDATE {table} SET revision_number = revision_number + 1, updated_at = $1 WHERE id = $2");
    sqlx::query(sqlx::AssertSqlSafe(sql)).bind(now).bind(id).execute(&mut *conn).await.map_err(internal)?;
    Ok(())
}

/// Reads a resource's current revision, or `None` if it does not exist.
pub(crate) async fn revision_of(conn: &mut SqliteConnection, table: &str, id: &str) -> Result<Option<i64>> {
    let rows = fetch(conn, format!("SELECT revision_number FROM {table} WHERE id = $1"), &[id.to_string()]).await?;
    rows.first().map(|r| get::<i64>(r, "revision_number")).transpose()
}

/// Refuses to create more than the project's limit of `resource`.
pub(crate) async fn check_quota(
    conn: &mut SqliteConnection,
    store: &SqliteStore,
    project: &str,
    resource: &str,
    table: &str,
    adding: i64,
) -> Result<()> {
    let limit = super::quotas::limit_in(conn, store, project, resource).await?;
    if limit < 0 {
        return Ok(());
    }
    let used = super::quotas::count_in(conn, table, project).await?;
    if !neutrino_model::quota::within_limit(limit, used, adding) {
        return Err(Error::OverQuota(format!("['{resource}']")));
    }
    Ok(())
}

/// [`check_quota`] for a bulk create: `projects` holds one entry per
/// resource created, and each project's total is checked at once.
pub(crate) async fn check_quotas<'a>(
    conn: &mut SqliteConnection,
    store: &SqliteStore,
    projects: impl IntoIterator<Item = &'a str>,
    resource: &str,
    table: &str,
) -> Result<()> {
    let mut per_project: std::collections::BTreeMap<&str, i64> = Default::default();
    for project in projects {
        *per_project.entry(project).or_default() += 1;
    }
    for (project, count) in per_project {
        check_quota(conn, store, project, resource, table, count).await?;
    }
    Ok(())
}

impl SqliteStore {
    pub(crate) async fn create_networks_impl(&self, requests: Vec<NetworkCreate>) -> Result<Vec<Network>> {
        let mut w = self.writer.lock().await;
        let mut tx = begin(&mut w.conn).await?;
        let now = now_iso();
        let mut created = Vec::with_capacity(requests.len());
        check_quotas(&mut tx, self, requests.iter().map(|r| r.project_id.as_str()), "network", "networks").await?;
        for req in requests {
            let id = NetworkId::new();
            let wanted: Vec<Option<&SegmentRequest>> = match &req.segments {
                None => vec![None],
                Some(list) => list.iter().map(Some).collect(),
            };
            let mut resolved = Vec::new();
            for want in wanted {
                let seg = resolve_segment(&mut tx, &self.config.segments, want).await?;
                if resolved.contains(&seg) {
                    return Err(Error::InvalidInput("Duplicate segment in the request".into()));
                }
                resolved.push(seg);
            }
            let max_mtu = self.config.segments.mtu.network_mtu(resolved.iter().map(|s| &s.network_type));
            let mtu = match req.mtu {
                Some(m) if m > max_mtu => {
                    return Err(Error::InvalidInput(format!("Requested MTU is too big, maximum is {max_mtu}")));
                }
                Some(m) if m > 0 => m,
                _ => max_mtu,
            };
            sqlx::query(
                "INSERT INTO networks (id, seq, project_id, name, description, admin_state_up, status, mtu, \
                 port_security_enabled, az_hints, created_at, updated_at, revision_number) \
                 VALUES ($1, (SELECT COALESCE(MAX(seq), 0) + 1 FROM networks), $2, $3, $4, $5, 'ACTIVE', $6, $7, $8, $9, $9, 1)",
            )
            .bind(id.to_string())
            .bind(req.project_id.as_str())
            .bind(&req.name)
            .bind(&req.description)
            .bind(req.admin_state_up)
            .bind(mtu)
            .bind(req.port_security_enabled)
            .bind(to_json(&req.availability_zone_hints))
            .bind(&now)
            .execute(&mut *tx)
            .await
            .map_err(internal)?;
            for seg in &resolved {
                insert_segment(&mut tx, &id, seg, None, "", &now).await?;
            }
            super::security_groups::ensure_default_group(&mut tx, &req.project_id, &now).await?;
            set_rbac(&mut tx, &id, req.project_id.as_str(), ACCESS_AS_SHARED, req.shared).await?;
            set_rbac(&mut tx, &id, req.project_id.as_str(), ACCESS_AS_EXTERNAL, req.external).await?;
            created.push(get_network_in(&mut tx, &Viewer::All, &id).await?);
        }
        tx.commit().await.map_err(internal)?;
        Ok(created)
    }

    pub(crate) async fn list_networks_impl(&self, q: &ListQuery) -> Result<Vec<Network>> {
        let mut w = Where::default();
        network_visibility(&mut w, &q.viewer);
        network_pushdown(&mut w, &q.pushdown);
        let mut conn = self.readers.acquire().await.map_err(internal)?;
        load_networks(&mut conn, &w).await
    }

    pub(crate) async fn get_network_impl(&self, viewer: &Viewer, id: &NetworkId) -> Result<Network> {
        let mut conn = self.readers.acquire().await.map_err(internal)?;
        get_network_in(&mut conn, viewer, id).await
    }

    pub(crate) async fn update_network_impl(
        &self,
        id: &NetworkId,
        upd: NetworkUpdate,
        if_match: Option<i64>,
    ) -> Result<Network> {
        let mut w = self.writer.lock().await;
        let mut tx = begin(&mut w.conn).await?;
        let current = get_network_in(&mut tx, &Viewer::All, id).await?;
        check_revision(if_match, current.std.revision_number)?;
        let now = now_iso();
        let nid = id.to_string();
        let owner = current.project_id.as_str();

        if upd.shared == Some(false) && current.is_shared_globally() {
            let rows = fetch(
                &mut tx,
                "SELECT 1 AS one FROM ports WHERE network_id = $1 AND project_id <> $2 AND project_id <> '' \
                 UNION ALL SELECT 1 AS one FROM subnets WHERE network_id = $1 AND project_id <> $2"
                    .into(),
                &[nid.clone(), owner.to_string()],
            )
            .await?;
            if !rows.is_empty() {
                return Err(Error::InvalidSharedSetting(nid));
            }
        }
        if let Some(shared) = upd.shared {
            set_rbac(&mut tx, id, owner, ACCESS_AS_SHARED, shared).await?;
        }
        if let Some(external) = upd.external {
            if !external && current.is_external() {
                super::l3::check_external_removal(&mut tx, id).await?;
            }
            set_rbac(&mut tx, id, owner, ACCESS_AS_EXTERNAL, external).await?;
        }
        let mut mtu = current.mtu;
        if let Some(requested) = upd.mtu {
            let max = self.config.segments.mtu.network_mtu(current.segments.iter().map(|s| &s.network_type));
            mtu = match requested {
                Some(m) if m > max => {
                    return Err(Error::InvalidInput(format!("Requested MTU is too big, maximum is {max}")));
                }
                Some(m) if m > 0 => m,
                _ => max,
            };
            let rows = fetch(
                &mut tx,
                "SELECT ip_version FROM subnets WHERE network_id = $1".into(),
                std::slice::from_ref(&nid),
            )
            .await?;
            let versions: Vec<i64> = rows.iter().map(|r| get(r, "ip_version")).collect::<Result<_>>()?;
            if !versions.is_empty() && mtu < 68 {
                return Err(Error::NetworkMtuSubnetConflict {
                    network: nid,
                    mtu,
                    reason: "IPv4 needs at least 68".into(),
                });
            }
            if versions.contains(&6) && mtu < 1280 {
                return Err(Error::NetworkMtuSubnetConflict {
                    network: nid,
                    mtu,
                    reason: "IPv6 needs at least 1280".into(),
                });
            }
        }
        if let Some(vlan) = upd.segmentation_id {
            let [seg] = current.segments.as_slice() else {
                return Err(Error::InvalidInput(
                    "Only networks with exactly one segment can change provider:segmentation_id".into(),
                ));
            };
            if seg.network_type != NetworkType::Vlan {
                return Err(Error::InvalidInput(
                    "provider:segmentation_id can only be changed on VLAN networks".into(),
                ));
            }
            if seg.segmentation_id != Some(vlan) {
                let req = SegmentRequest {
                    network_type: NetworkType::Vlan,
                    physical_network: seg.physical_network.clone(),
                    segmentation_id: Some(vlan),
                };
                segments::validate_segment_request(&self.config.segments, &req)?;
                if segment_taken(&mut tx, NetworkType::Vlan, seg.physical_network.as_deref(), Some(vlan)).await? {
                    return Err(in_use_error(NetworkType::Vlan, seg.physical_network.as_deref(), Some(vlan)));
                }
                sqlx::query(
                    "UPDATE segments SET segmentation_id = $1, segmentation_key = $1, updated_at = $2, \
                     revision_number = revision_number + 1 WHERE id = $3",
                )
                .bind(vlan)
                .bind(&now)
                .bind(seg.id.to_string())
                .execute(&mut *tx)
                .await
                .map_err(internal)?;
            }
        }
        sqlx::query(
            "UPDATE networks SET name = $1, description = $2, admin_state_up = $3, port_security_enabled = $4, \
             mtu = $5, updated_at = $6, revision_number = revision_number + 1 WHERE id = $7",
        )
        .bind(upd.name.as_ref().unwrap_or(&current.name))
        .bind(upd.description.as_ref().unwrap_or(&current.description))
        .bind(upd.admin_state_up.unwrap_or(current.admin_state_up))
        .bind(upd.port_security_enabled.unwrap_or(current.port_security_enabled))
        .bind(mtu)
        .bind(&now)
        .bind(&nid)
        .execute(&mut *tx)
        .await
        .map_err(internal)?;
        let updated = get_network_in(&mut tx, &Viewer::All, id).await?;
        tx.commit().await.map_err(internal)?;
        Ok(updated)
    }

    pub(crate) async fn delete_network_impl(&self, id: &NetworkId, if_match: Option<i64>) -> Result<()> {
        let mut w = self.writer.lock().await;
        let w = &mut *w;
        let mut tx = begin(&mut w.conn).await?;
        let nid = id.to_string();
        let rev =
            revision_of(&mut tx, "networks", &nid).await?.ok_or_else(|| Error::not_found(ResourceKind::Network, id))?;
        check_revision(if_match, rev)?;
        let mut ipam = w.ipam.begin();
        super::l3::before_network_delete(self, &mut tx, &mut ipam, id).await?;
        let ports = fetch(
            &mut tx,
            "SELECT id, device_owner FROM ports WHERE network_id = $1 ORDER BY id".into(),
            std::slice::from_ref(&nid),
        )
        .await?;
        let mut blocking = Vec::new();
        for row in &ports {
            let owner: String = get(row, "device_owner")?;
            if !device_owner::is_auto_deletable(&owner) {
                blocking.push(get::<String>(row, "id")?);
            }
        }
        if !blocking.is_empty() {
            return Err(Error::NetworkInUse { network: nid, ports: blocking.join(", ") });
        }
        let subnet_rows =
            fetch(&mut tx, "SELECT id FROM subnets WHERE network_id = $1".into(), std::slice::from_ref(&nid)).await?;
        let subnet_ids: Vec<String> = subnet_rows.iter().map(|r| get(r, "id")).collect::<Result<_>>()?;
        for stmt in [
            "DELETE FROM ports WHERE network_id = $1",
            "DELETE FROM subnets WHERE network_id = $1",
            "DELETE FROM segments WHERE network_id = $1",
            "DELETE FROM networks WHERE id = $1",
        ] {
            sqlx::query(stmt).bind(&nid).execute(&mut *tx).await.map_err(internal)?;
        }
        tx.commit().await.map_err(internal)?;
        for s in &subnet_ids {
            if let Ok(sid) = s.parse() {
                ipam.forget(&sid);
            }
        }
        ipam.commit();
        Ok(())
    }

    // ---- segments ------------------------------------------------------------

    pub(crate) async fn create_segments_impl(&self, requests: Vec<SegmentCreate>) -> Result<Vec<Segment>> {
        let mut w = self.writer.lock().await;
        let mut tx = begin(&mut w.conn).await?;
        let now = now_iso();
        let mut ids = Vec::new();
        for req in requests {
            let nid = req.network_id.to_string();
            revision_of(&mut tx, "networks", &nid)
                .await?
                .ok_or_else(|| Error::not_found(ResourceKind::Network, req.network_id))?;
            let seg = resolve_segment(&mut tx, &self.config.segments, Some(&req.request)).await?;
            ids.push(
                insert_segment(&mut tx, &req.network_id, &seg, req.name.as_deref(), &req.description, &now).await?,
            );
            bump(&mut tx, "networks", &nid, &now).await?;
        }
        let mut out = Vec::new();
        for id in ids {
            out.push(get_segment_in(&mut tx, &id).await?);
        }
        tx.commit().await.map_err(internal)?;
        Ok(out)
    }

    pub(crate) async fn get_segment_impl(&self, id: &SegmentId) -> Result<Segment> {
        let mut conn = self.readers.acquire().await.map_err(internal)?;
        get_segment_in(&mut conn, id).await
    }

    pub(crate) async fn list_segments_impl(&self, q: &ListQuery) -> Result<Vec<Segment>> {
        let mut w = Where::default();
        if let Viewer::Project(p) = &q.viewer {
            w.add("s.network_id IN (SELECT id FROM networks WHERE project_id = {})", &[p.as_str()]);
        }
        w.add_in("s.id", &q.pushdown.ids);
        w.add_in("s.network_id", &q.pushdown.network_ids);
        let mut conn = self.readers.acquire().await.map_err(internal)?;
        load_segments(&mut conn, &w).await
    }

    pub(crate) async fn update_segment_impl(
        &self,
        id: &SegmentId,
        upd: SegmentUpdate,
        if_match: Option<i64>,
    ) -> Result<Segment> {
        let mut w = self.writer.lock().await;
        let mut tx = begin(&mut w.conn).await?;
        let current = get_segment_in(&mut tx, id).await?;
        check_revision(if_match, current.std.revision_number)?;
        sqlx::query(
            "UPDATE segments SET name = $1, description = $2, updated_at = $3, revision_number = revision_number + 1 WHERE id = $4",
        )
        .bind(upd.name.unwrap_or(current.name))
        .bind(upd.description.unwrap_or(current.description))
        .bind(now_iso())
        .bind(id.to_string())
        .execute(&mut *tx)
        .await
        .map_err(internal)?;
        let updated = get_segment_in(&mut tx, id).await?;
        tx.commit().await.map_err(internal)?;
        Ok(updated)
    }

    pub(crate) async fn delete_segment_impl(&self, id: &SegmentId, if_match: Option<i64>) -> Result<()> {
        let mut w = self.writer.lock().await;
        let mut tx = begin(&mut w.conn).await?;
        let current = get_segment_in(&mut tx, id).await?;
        check_revision(if_match, current.std.revision_number)?;
        let sid = id.to_string();
        let users =
            fetch(&mut tx, "SELECT id FROM subnets WHERE segment_id = $1".into(), std::slice::from_ref(&sid)).await?;
        if !users.is_empty() {
            return Err(Error::SegmentInUse(sid));
        }
        sqlx::query("DELETE FROM segments WHERE id = $1").bind(&sid).execute(&mut *tx).await.map_err(internal)?;
        bump(&mut tx, "networks", &current.network_id.to_string(), &now_iso()).await?;
        tx.commit().await.map_err(internal)?;
        Ok(())
    }
}

async fn get_segment_in(conn: &mut SqliteConnection, id: &SegmentId) -> Result<Segment> {
    let mut w = Where::default();
    w.add("s.id = {}", &[&id.to_string()]);
    load_segments(conn, &w).await?.pop().ok_or_else(|| Error::not_found(ResourceKind::Segment, id))
}
