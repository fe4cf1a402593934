//! Keystone v3 JSON shapes.

use neutrino_model::identity::*;
use serde_json::{Value, json};

use super::{TokenInfo, keystone_time};

/// Ids of the catalog entries, fixed per installation.
#[derive(Debug, Clone)]
pub struct CatalogIds {
    pub network_service: String,
    pub identity_service: String,
    pub network_endpoints: [String; 3],
    pub identity_endpoints: [String; 3],
}

pub const INTERFACES: [&str; 3] = ["public", "internal", "admin"];

pub fn domain(base: &str) -> Value {
    json!({
        "id": DEFAULT_DOMAIN_ID, "name": DEFAULT_DOMAIN_NAME, "description": "The default domain",
        "enabled": true, "tags": [], "options": {},
        "links": {"self": format!("{base}/v3/domains/{DEFAULT_DOMAIN_ID}")}
    })
}

pub fn project(base: &str, p: &Project) -> Value {
    json!({
        "id": p.id, "name": p.name, "domain_id": p.domain_id, "description": p.description,
        "enabled": p.enabled, "is_domain": false, "parent_id": p.domain_id, "tags": [], "options": {},
        "links": {"self": format!("{base}/v3/projects/{}", p.id)}
    })
}

pub fn user(base: &str, u: &User) -> Value {
    let mut v = json!({
        "id": u.id, "name": u.name, "domain_id": u.domain_id, "enabled": u.enabled,
        "password_expires_at": null, "options": {},
        "links": {"self": format!("{base}/v3/users/{}", u.id)}
    });
    if let Some(p) = &u.default_project_id {
        v["default_project_id"] = json!(p);
    }
    if let Some(e) = &u.email {
        v["email"] = json!(e);
    }
    if !u.description.is_empty() {
        v["description"] = json!(u.description);
    }
    v
}

pub fn role(base: &str, r: &Role) -> Value {
    json!({
        "id": r.id, "name": r.name, "domain_id": null, "description": r.description, "options": {},
        "links": {"self": format!("{base}/v3/roles/{}", r.id)}
    })
}

pub fn services(base: &str, ids: &CatalogIds) -> Vec<Value> {
    vec![
        json!({"id": ids.network_service, "type": "network", "name": "neutron", "description": "Neutrino networking",
               "enabled": true, "links": {"self": format!("{base}/v3/services/{}", ids.network_service)}}),
        json!({"id": ids.identity_service, "type": "identity", "name": "keystone", "description": "Neutrino identity",
               "enabled": true, "links": {"self": format!("{base}/v3/services/{}", ids.identity_service)}}),
    ]
}

pub fn endpoints(base: &str, region: &str, ids: &CatalogIds) -> Vec<Value> {
    let mut out = Vec::new();
    for (i, iface) in INTERFACES.iter().enumerate() {
        out.push(json!({
            "id": ids.network_endpoints[i], "interface": iface, "region": region, "region_id": region,
            "service_id": ids.network_service, "url": base, "enabled": true,
            "links": {"self": format!("{base}/v3/endpoints/{}", ids.network_endpoints[i])}
        }));
        out.push(json!({
            "id": ids.identity_endpoints[i], "interface": iface, "region": region, "region_id": region,
            "service_id": ids.identity_service, "url": format!("{base}/v3"), "enabled": true,
            "links": {"self": format!("{base}/v3/endpoints/{}", ids.identity_endpoints[i])}
        }));
    }
    out
}

/// The catalog as it appears inside a token.
pub fn catalog(base: &str, region: &str, ids: &CatalogIds) -> Value {
    let eps = |url: String, ep_ids: &[String; 3]| -> Vec<Value> {
        INTERFACES
            .iter()
            .enumerate()
            .map(|(i, iface)| json!({"id": ep_ids[i], "interface": iface, "region": region, "region_id": region, "url": url}))
            .collect()
    };
    json!([
        {"id": ids.network_service, "type": "network", "name": "neutron",
         "endpoints": eps(base.to_string(), &ids.network_endpoints)},
        {"id": ids.identity_service, "type": "identity", "name": "keystone",
         "endpoints": eps(format!("{base}/v3"), &ids.identity_endpoints)},
    ])
}

pub fn token(info: &TokenInfo, catalog: Option<Value>) -> Value {
    let domain = json!({"id": DEFAULT_DOMAIN_ID, "name": DEFAULT_DOMAIN_NAME});
    let mut t = json!({
        "methods": info.methods,
        "expires_at": keystone_time(info.expires_at),
        "issued_at": keystone_time(info.issued_at),
        "audit_ids": [info.audit_id],
        "user": {"id": info.user.id, "name": info.user.name, "password_expires_at": null, "domain": domain},
        "project": {"id": info.project.id, "name": info.project.name, "domain": domain},
        "is_domain": false,
        "roles": info.roles.iter().map(|r| json!({"id": r.id, "name": r.name})).collect::<Vec<_>>(),
    });
    if let Some(c) = catalog {
        t["catalog"] = c;
    }
    json!({ "token": t })
}

pub fn version(base: &str) -> Value {
    json!({
        "id": "v3.14", "status": "stable", "updated": "2020-04-07T00:00:00Z",
        "links": [{"rel": "self", "href": format!("{base}/v3/")}],
        "media-types": [{"base": "application/json", "type": "application/vnd.openstack.identity-v3+json"}]
    })
}
