//! Segments of networks: choosing free segmentation ids (the schema's
//! unique key is the last word), creating, updating and deleting them.

use std::collections::BTreeSet;

use super::Conn;
use neutrino_model::policy::Viewer;
use neutrino_model::resources::*;
use neutrino_model::segments::{self, NetworkType, SegmentConfig, SegmentRequest};
use neutrino_model::{Error, NetworkId, ResourceKind, Result, SegmentId};

use super::revisions::{bump, check_revision, revision_of};
use super::rows::{fetch, get, load_segments};
use super::txn::Txn;
use super::{Backend, Where, internal, is_unique_violation, now_iso};
use crate::ListQuery;
use crate::feed::{ChangeOp, Subject};

/// The key columns that make a segment unique (see the schema).
fn segment_keys(t: NetworkType, physnet: Option<&str>, id: Option<i64>) -> (String, i64) {
    (physnet.unwrap_or("").to_string(), if t == NetworkType::Flat { 0 } else { id.unwrap_or(0) })
}

pub(super) async fn segment_taken(
    conn: &mut Conn,
    t: NetworkType,
    physnet: Option<&str>,
    id: Option<i64>,
) -> Result<bool> {
    let (pk, sk) = segment_keys(t, physnet, id);
    let row = sqlx::query(
        "SELECT 1 AS one FROM segments WHERE network_type = $1 AND physnet_key = $2 AND segmentation_key = $3",
    )
    .bind(t.as_str())
    .bind(pk)
    .bind(sk)
    .fetch_optional(&mut *conn)
    .await
    .map_err(internal)?;
    Ok(row.is_some())
}

pub(super) fn in_use_error(t: NetworkType, physnet: Option<&str>, id: Option<i64>) -> Error {
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
    conn: &mut Conn,
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
pub(super) async fn resolve_segment(
    conn: &mut Conn,
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

pub(super) async fn insert_segment(
    tx: &mut Txn<'_>,
    network: &NetworkId,
    seg: &SegmentRequest,
    name: Option<&str>,
    description: &str,
    now: &str,
) -> Result<SegmentId> {
    let id = SegmentId::new();
    let (pk, sk) = segment_keys(seg.network_type, seg.physical_network.as_deref(), seg.segmentation_id);
    let res = sqlx::query(concat!(
        "INSERT INTO segments (id, network_id, name, description, network_type, physical_network, segmentation_id, \
         physnet_key, segmentation_key, seq, created_at, updated_at, revision_number) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, \
         ",
        next_seq!("segments"),
        ", $10, $10, 1)"
    ))
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
    .execute(&mut **tx)
    .await;
    match res {
        Ok(_) => {
            tx.record_networks(Subject::Segment(id), ChangeOp::Created, [*network]);
            Ok(id)
        }
        Err(e) if is_unique_violation(&e) => {
            Err(in_use_error(seg.network_type, seg.physical_network.as_deref(), seg.segmentation_id))
        }
        Err(e) => Err(internal(e)),
    }
}

impl Backend {
    pub(crate) async fn create_segments_impl(&self, requests: Vec<SegmentCreate>) -> Result<Vec<Segment>> {
        let mut w = self.writer.lock().await;
        let mut tx = self.write_txn(&mut w.conn).await?;
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
            tx.record_networks(Subject::Network(req.network_id), ChangeOp::Updated, [req.network_id]);
        }
        let mut out = Vec::new();
        for id in ids {
            out.push(get_segment_in(&mut tx, &id).await?);
        }
        tx.commit().await?;
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
        let mut tx = self.write_txn(&mut w.conn).await?;
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
        tx.record_networks(Subject::Segment(*id), ChangeOp::Updated, [updated.network_id]);
        tx.commit().await?;
        Ok(updated)
    }

    pub(crate) async fn delete_segment_impl(&self, id: &SegmentId, if_match: Option<i64>) -> Result<()> {
        let mut w = self.writer.lock().await;
        let mut tx = self.write_txn(&mut w.conn).await?;
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
        let network = [current.network_id];
        tx.record_networks(Subject::Segment(*id), ChangeOp::Deleted, network);
        tx.record_networks(Subject::Network(current.network_id), ChangeOp::Updated, network);
        tx.commit().await?;
        Ok(())
    }
}

async fn get_segment_in(conn: &mut Conn, id: &SegmentId) -> Result<Segment> {
    let mut w = Where::default();
    w.add("s.id = {}", &[&id.to_string()]);
    load_segments(conn, &w).await?.pop().ok_or_else(|| Error::not_found(ResourceKind::Segment, id))
}
