//! List requests (spec §1.5–1.8): filters, `fields=`, sorting and
//! pagination with links, applied to the rendered views of the resources
//! the caller may see.

use std::cmp::Ordering;

use neutrino_model::{Error, Result};
use neutrino_store::Pushdown;
use serde_json::{Map, Value};

use super::request::{parse_bool_text, parse_cidr, parse_ip};
use super::spec::{FilterKind, ResourceSpec};

/// Tag filters, valid on every resource with standard attributes.
const TAG_FILTERS: &[&str] = &["tags", "tags-any", "not-tags", "not-tags-any"];

#[derive(Debug, Clone, Default)]
pub struct ListParams {
    pub fields: Vec<String>,
    pub sorts: Vec<(String, bool)>,
    pub limit: Option<usize>,
    pub marker: Option<String>,
    pub page_reverse: bool,
    /// Filter name → accepted values (OR), in order of first appearance.
    pub filters: Vec<(String, Vec<String>)>,
    /// The query as given, for building links.
    pub raw: Vec<(String, String)>,
}

/// Where the request came from, to build pagination links.
#[derive(Debug, Clone)]
pub struct RequestBase {
    /// `http://host:port`
    pub origin: String,
    /// The path as requested, e.g. `/v2.0/networks`.
    pub path: String,
}

pub fn parse_pairs(query: Option<&str>) -> Vec<(String, String)> {
    query.map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect()).unwrap_or_default()
}

impl ListParams {
    /// Parses and validates a list query. `extra` names filters the
    /// resource accepts beyond its attribute table.
    pub fn parse(query: Option<&str>, spec: &ResourceSpec, extra: &[&str]) -> Result<Self> {
        let raw = parse_pairs(query);
        let mut p = ListParams { raw: raw.clone(), ..Default::default() };
        let mut keys = Vec::new();
        let mut dirs = Vec::new();
        for (k, v) in &raw {
            match k.as_str() {
                "fields" => p.fields.extend(v.split(',').filter(|s| !s.is_empty()).map(str::to_string)),
                "sort_key" => keys.push(v.clone()),
                "sort_dir" => dirs.push(v.clone()),
                "limit" => {
                    let n: i64 = v.parse().map_err(|_| limit_error(v))?;
                    if n < 0 {
                        return Err(limit_error(v));
                    }
                    p.limit = (n > 0).then_some(n as usize);
                }
                "marker" => p.marker = Some(v.clone()),
                "page_reverse" => p.page_reverse = parse_bool_text(v).unwrap_or(false),
                name => {
                    let ok = TAG_FILTERS.contains(&name) && spec.standard
                        || extra.contains(&name)
                        || name == "changed_since" && spec.standard
                        || spec.find(name).is_some_and(|a| a.filter != FilterKind::No);
                    if !ok {
                        return Err(Error::BadRequest(format!("['{name}'] is invalid attribute for filtering")));
                    }
                    match p.filters.iter_mut().find(|(n, _)| n == name) {
                        Some((_, vals)) => vals.push(v.clone()),
                        None => p.filters.push((name.to_string(), vec![v.clone()])),
                    }
                }
            }
        }
        if keys.len() != dirs.len() {
            return Err(Error::BadRequest("The number of sort_keys and sort_dirs must be same".into()));
        }
        for (k, d) in keys.into_iter().zip(dirs) {
            let asc = match d.as_str() {
                "asc" => true,
                "desc" => false,
                other => {
                    return Err(Error::BadRequest(format!(
                        "{other} is invalid value for sort_dirs, valid sort dir values are asc, desc"
                    )));
                }
            };
            let sortable = spec.find(&k).is_some_and(|a| a.sort);
            if !sortable {
                return Err(Error::BadRequest(format!("['{k}'] is invalid attribute for sort_keys")));
            }
            p.sorts.push((k, asc));
        }
        Ok(p)
    }

    pub fn values(&self, name: &str) -> Option<&[String]> {
        self.filters.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_slice())
    }

    /// Whether the store's SQL filters are all the filtering the request
    /// asks for (nothing left to check in memory).
    pub fn filters_pushed_down(&self) -> bool {
        const PUSHED: &[&str] = &["id", "network_id", "project_id", "tenant_id", "device_id"];
        !(self.values("project_id").is_some() && self.values("tenant_id").is_some())
            && self
                .filters
                .iter()
                .all(|(name, values)| PUSHED.contains(&name.as_str()) && values.iter().all(|v| !v.is_empty()))
    }

    /// Whether the store's SQL does the whole request: no filter left for
    /// memory, no field selection, sorting or paging.
    pub fn fully_pushed_down(&self) -> bool {
        self.filters_pushed_down()
            && self.fields.is_empty()
            && self.sorts.is_empty()
            && self.limit.is_none()
            && self.marker.is_none()
    }

    /// Filters the store can apply in SQL.
    pub fn pushdown(&self) -> Pushdown {
        let mut p = Pushdown::default();
        let get = |n: &str| self.values(n).map(|v| v.to_vec()).unwrap_or_default();
        p.ids = get("id");
        p.network_ids = get("network_id");
        p.project_ids = get("project_id");
        p.project_ids.extend(get("tenant_id"));
        p.device_ids = get("device_id");
        // An empty value means "empty string" filtering, not "any".
        for v in [&mut p.ids, &mut p.network_ids, &mut p.project_ids, &mut p.device_ids] {
            if v.iter().any(String::is_empty) {
                v.clear();
            }
        }
        if self.values("project_id").is_some() && self.values("tenant_id").is_some() {
            p.project_ids.clear();
        }
        p
    }
}

fn limit_error(v: &str) -> Error {
    Error::BadRequest(format!("Limit must be an integer 0 or greater and not '{v}'"))
}

fn normalise(kind: FilterKind, name: &str, raw: &str) -> Result<Value> {
    let bad = || Error::BadRequest(format!("Invalid input for {name}. Reason: '{raw}' is not a valid value."));
    Ok(match kind {
        FilterKind::Bool => Value::Bool(parse_bool_text(raw).ok_or_else(|| {
            Error::BadRequest(format!("Invalid input for operation: '{raw}' cannot be converted to boolean."))
        })?),
        FilterKind::Int => Value::from(raw.trim().parse::<i64>().map_err(|_| bad())?),
        FilterKind::Mac if !raw.is_empty() => {
            Value::String(raw.parse::<neutrino_model::MacAddress>().map(|m| m.to_string()).map_err(|_| bad())?)
        }
        FilterKind::Cidr if !raw.is_empty() => {
            Value::String(parse_cidr(raw).map(|c| c.trunc().to_string()).unwrap_or_else(|| raw.to_string()))
        }
        FilterKind::Ip if !raw.is_empty() => {
            Value::String(parse_ip(raw).map(|ip| ip.to_string()).unwrap_or_else(|| raw.to_string()))
        }
        FilterKind::Lower => Value::String(neutrino_model::dns::lowercase(raw)),
        _ => Value::String(raw.to_string()),
    })
}

fn tag_list(view: &Map<String, Value>) -> Vec<&str> {
    view.get("tags").and_then(Value::as_array).map(|a| a.iter().filter_map(Value::as_str).collect()).unwrap_or_default()
}

fn split_tags(values: &[String]) -> Vec<&str> {
    values.iter().flat_map(|v| v.split(',')).filter(|t| !t.is_empty()).collect()
}

/// Normalises an ISO 8601 timestamp to the stored form for comparison.
fn normalise_time(raw: &str) -> Result<String> {
    use time::format_description::well_known::Rfc3339;
    let with_zone = if raw.ends_with('Z') || raw.contains('+') || raw[10.min(raw.len())..].contains('-') {
        raw.to_string()
    } else {
        format!("{raw}Z")
    };
    let t = time::OffsetDateTime::parse(&with_zone, &Rfc3339).map_err(|_| {
        Error::BadRequest(format!("Invalid input for changed_since. Reason: '{raw}' is not a valid timestamp."))
    })?;
    let fmt = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    Ok(t.to_offset(time::UtcOffset::UTC).format(&fmt).unwrap_or_default())
}

/// A hook for filters a resource evaluates itself: returns `Some(result)`
/// when it handled the filter.
pub type SpecialFilter<'a> = &'a dyn Fn(&Map<String, Value>, &str, &[String]) -> Result<Option<bool>>;

fn matches(
    view: &Map<String, Value>,
    spec: &ResourceSpec,
    params: &ListParams,
    special: SpecialFilter,
) -> Result<bool> {
    for (name, values) in &params.filters {
        if let Some(result) = special(view, name, values)? {
            if !result {
                return Ok(false);
            }
            continue;
        }
        let ok = match name.as_str() {
            "tags" => {
                let have = tag_list(view);
                split_tags(values).iter().all(|t| have.contains(t))
            }
            "tags-any" => {
                let have = tag_list(view);
                split_tags(values).iter().any(|t| have.contains(t))
            }
            "not-tags" => {
                let have = tag_list(view);
                !split_tags(values).iter().all(|t| have.contains(t))
            }
            "not-tags-any" => {
                let have = tag_list(view);
                !split_tags(values).iter().any(|t| have.contains(t))
            }
            "changed_since" => {
                let since = normalise_time(&values[0])?;
                view.get("updated_at").and_then(Value::as_str).is_some_and(|u| u >= since.as_str())
            }
            _ => {
                let kind = spec.find(name).map(|a| a.filter).unwrap_or(FilterKind::Text);
                let actual = view.get(name).unwrap_or(&Value::Null);
                let mut any = false;
                for raw in values {
                    let want = normalise(kind, name, raw)?;
                    let hit = match (kind, actual) {
                        (FilterKind::Member, Value::Array(items)) => items.contains(&want),
                        (_, Value::Null) => false,
                        (_, Value::Number(n)) => {
                            want.as_i64().is_some_and(|w| n.as_i64() == Some(w))
                                || want.as_str().is_some_and(|w| w == n.to_string())
                        }
                        (_, actual) => *actual == want,
                    };
                    if hit {
                        any = true;
                        break;
                    }
                }
                any
            }
        };
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}

fn rank(v: &Value) -> u8 {
    match v {
        Value::Null => 0,
        Value::Bool(_) => 1,
        Value::Number(_) => 2,
        Value::String(_) => 3,
        _ => 4,
    }
}

fn compare(a: &Value, b: &Value) -> Ordering {
    match (a, b) {
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        (Value::Number(x), Value::Number(y)) => {
            x.as_f64().unwrap_or(0.0).partial_cmp(&y.as_f64().unwrap_or(0.0)).unwrap_or(Ordering::Equal)
        }
        (Value::String(x), Value::String(y)) => x.cmp(y),
        _ => rank(a).cmp(&rank(b)),
    }
}

/// The result of a list request: the items to return and, when paginated,
/// the links.
pub struct ListPage {
    pub items: Vec<Value>,
    pub links: Option<Vec<Value>>,
}

/// Filters, sorts, paginates and trims rendered views.
pub fn apply(
    views: Vec<Map<String, Value>>,
    spec: &ResourceSpec,
    params: &ListParams,
    base: &RequestBase,
    special: SpecialFilter,
) -> Result<ListPage> {
    let mut items = Vec::with_capacity(views.len());
    for v in views {
        if matches(&v, spec, params, special)? {
            items.push(v);
        }
    }
    let (items, links) = sort_and_page(items, params, base, |v, key| v.get(key).cloned().unwrap_or(Value::Null))?;
    let items = items.into_iter().map(|v| Value::Object(select_fields(v, &params.fields))).collect();
    Ok(ListPage { items, links })
}

/// Sorts and paginates (spec §1.7, §1.8) items of any kind; `key` gives an
/// item's value of an attribute. Returns the page and, when paginated, its
/// links.
pub fn sort_and_page<T>(
    mut items: Vec<T>,
    params: &ListParams,
    base: &RequestBase,
    key: impl Fn(&T, &str) -> Value,
) -> Result<(Vec<T>, Option<Vec<Value>>)> {
    let mut sorts = params.sorts.clone();
    if params.limit.is_some() && !sorts.iter().any(|(k, _)| k == "id") {
        sorts.push(("id".into(), true));
    }
    if !sorts.is_empty() {
        // Extract the keys once rather than on every comparison.
        let mut keyed: Vec<(Vec<Value>, T)> =
            items.into_iter().map(|it| (sorts.iter().map(|(k, _)| key(&it, k)).collect(), it)).collect();
        keyed.sort_by(|(a, _), (b, _)| {
            for (i, (_, asc)) in sorts.iter().enumerate() {
                let o = compare(&a[i], &b[i]);
                if o != Ordering::Equal {
                    return if *asc { o } else { o.reverse() };
                }
            }
            Ordering::Equal
        });
        items = keyed.into_iter().map(|(_, it)| it).collect();
    }
    let Some(limit) = params.limit else { return Ok((items, None)) };
    let id_of = |it: &T| key(it, "id").as_str().map(str::to_string);
    let (start, end) = match &params.marker {
        None => {
            if params.page_reverse {
                (items.len().saturating_sub(limit), items.len())
            } else {
                (0, limit.min(items.len()))
            }
        }
        Some(marker) => {
            // Neutron looks the marker up first: an unknown one is a 404.
            let pos =
                items.iter().position(|it| id_of(it).as_deref() == Some(marker.as_str())).ok_or(Error::HttpNotFound)?;
            if params.page_reverse {
                (pos.saturating_sub(limit), pos)
            } else {
                (pos + 1, (pos + 1 + limit).min(items.len()))
            }
        }
    };
    let page: Vec<T> = items.drain(start..end).collect();
    let mut links = Vec::new();
    let short = page.len() < limit;
    // `next` unless a short forward page; `previous` unless a short
    // backward page (spec §1.8).
    let has_next = !short || params.page_reverse;
    let has_previous = !short || !params.page_reverse;
    if has_next && let Some(last) = page.last().and_then(&id_of) {
        links.push(serde_json::json!({"rel": "next", "href": link(base, params, &last, false)}));
    }
    if has_previous && let Some(first) = page.first().and_then(&id_of) {
        links.push(serde_json::json!({"rel": "previous", "href": link(base, params, &first, true)}));
    }
    Ok((page, Some(links)))
}

fn link(base: &RequestBase, params: &ListParams, marker: &str, reverse: bool) -> String {
    let mut ser = form_urlencoded::Serializer::new(String::new());
    for (k, v) in &params.raw {
        if k != "marker" && k != "page_reverse" {
            ser.append_pair(k, v);
        }
    }
    ser.append_pair("marker", marker);
    if reverse {
        ser.append_pair("page_reverse", "True");
    }
    format!("{}{}?{}", base.origin, base.path, ser.finish())
}

/// Keeps only the requested fields (all of them when none were requested).
pub fn select_fields(mut view: Map<String, Value>, fields: &[String]) -> Map<String, Value> {
    if fields.is_empty() {
        return view;
    }
    view.retain(|k, _| fields.iter().any(|f| f == k));
    view
}

/// The filter hook for resources without special filters.
pub fn no_special(_: &Map<String, Value>, _: &str, _: &[String]) -> Result<Option<bool>> {
    Ok(None)
}

/// The `fields=` of a show request (other parameters are ignored there).
pub fn fields_of(query: Option<&str>) -> Vec<String> {
    parse_pairs(query)
        .into_iter()
        .filter(|(k, _)| k == "fields")
        .flat_map(|(_, v)| v.split(',').filter(|s| !s.is_empty()).map(str::to_string).collect::<Vec<_>>())
        .collect()
}
