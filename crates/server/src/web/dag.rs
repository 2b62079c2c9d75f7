//! A pipeline's DAG as SVG, laid out on the server: one column per stage of the plan
//! (sources first, then what reads them, sinks last), nodes in plan order within a column,
//! data edges solid, ordering edges dashed, each compensation step below its node with a
//! dotted edge. Each node is coloured by its status in the run shown, with its counts,
//! its retries by class and its quarantined records.

use sluice_config::plan::{EdgeKind, Plan};
use sluice_state::NodeRunRow;
use std::collections::BTreeMap;

use super::html::esc;

const W: i64 = 230;
const H: i64 = 104;
const GAP_X: i64 = 70;
const GAP_Y: i64 = 34;
const PAD: i64 = 16;
const COMP_H: i64 = 26;

/// What the run shown says of one node.
#[derive(Default)]
pub(crate) struct NodeState<'a> {
    pub(crate) row: Option<&'a NodeRunRow>,
    /// Failed attempts by class (retried, split or quarantined).
    pub(crate) retries: BTreeMap<String, usize>,
}

/// The SVG of `plan`, with `states` by node id.
pub(crate) fn svg(plan: &Plan, states: &BTreeMap<String, NodeState<'_>>) -> String {
    let mut columns: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (i, n) in plan.nodes.iter().enumerate() {
        columns.entry(n.stage.max(1)).or_default().push(i);
    }
    let row_h = H + COMP_H + GAP_Y;
    let mut pos: BTreeMap<&str, (i64, i64)> = BTreeMap::new();
    let mut max_rows = 1;
    for (col, (_, members)) in columns.iter().enumerate() {
        max_rows = max_rows.max(members.len());
        for (row, &i) in members.iter().enumerate() {
            let x = PAD + col as i64 * (W + GAP_X);
            let y = PAD + row as i64 * row_h;
            pos.insert(plan.nodes[i].id.as_str(), (x, y));
        }
    }
    let width = PAD * 2 + columns.len().max(1) as i64 * (W + GAP_X) - GAP_X;
    let height = PAD * 2 + max_rows as i64 * row_h - GAP_Y;
    let mut out = format!(
        r#"<svg class="dag" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" aria-label="the pipeline's graph">
<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" class="arrowhead"/></marker></defs>
"#
    );
    for e in &plan.edges {
        let (Some(&(x1, y1)), Some(&(x2, y2))) = (pos.get(e.from.as_str()), pos.get(e.to.as_str()))
        else {
            continue;
        };
        let (sx, sy, tx, ty) = (x1 + W, y1 + H / 2, x2, y2 + H / 2);
        let mid = (sx + tx) / 2;
        let class = match e.kind {
            EdgeKind::Data => "edge data",
            EdgeKind::Order => "edge order",
        };
        out.push_str(&format!(
            r#"<path class="{class}" d="M {sx} {sy} C {mid} {sy}, {mid} {ty}, {tx} {ty}" marker-end="url(#arrow)"><title>{} → {} ({})</title></path>
"#,
            esc(&e.from),
            esc(&e.to),
            match e.kind {
                EdgeKind::Data => "data",
                EdgeKind::Order => "runs after",
            }
        ));
    }
    for n in &plan.nodes {
        let Some(&(x, y)) = pos.get(n.id.as_str()) else {
            continue;
        };
        let state = states.get(&n.id);
        let row = state.and_then(|s| s.row);
        let status = row.map_or("none", |r| r.status.as_str());
        let mut lines = vec![format!("{} · {}", esc(n.node_type), esc(n.role.as_str()))];
        match row {
            Some(r) => {
                lines.push(format!(
                    "in {} · out {}",
                    r.counts.records_in, r.counts.records_out
                ));
                let retries = state
                    .map(|s| {
                        s.retries
                            .iter()
                            .map(|(c, k)| format!("{} {k}", esc(c)))
                            .collect::<Vec<_>>()
                            .join(", ")
                    })
                    .unwrap_or_default();
                if r.counts.retries > 0 {
                    lines.push(format!("retries {}", r.counts.retries));
                }
                if !retries.is_empty() {
                    lines.push(format!("failed: {retries}"));
                }
                if r.counts.quarantined > 0 {
                    lines.push(format!("quarantined {}", r.counts.quarantined));
                }
            }
            None => lines.push("not run".to_owned()),
        }
        let tooltip = row
            .and_then(|r| r.error.as_deref())
            .map_or_else(String::new, |e| format!("\n{}", esc(e)));
        out.push_str(&format!(
            r#"<g class="node st-{status}" data-node="{id}"><title>{id} ({status}){tooltip}</title><rect{quarantined} x="{x}" y="{y}" width="{W}" height="{H}" rx="8"/>
<text x="{tx}" y="{ty}" class="node-id">{id}</text>
"#,
            id = esc(&n.id),
            status = esc(status),
            quarantined = if row.is_some_and(|r| r.counts.quarantined > 0) {
                r#" class="quarantined""#
            } else {
                ""
            },
            tx = x + 10,
            ty = y + 20,
        ));
        for (k, line) in lines.iter().enumerate() {
            out.push_str(&format!(
                r#"<text x="{}" y="{}" class="node-line">{line}</text>
"#,
                x + 10,
                y + 38 + k as i64 * 15
            ));
        }
        out.push_str("</g>\n");
        if let Some(task) = &n.compensate {
            let cy = y + H + 10;
            out.push_str(&format!(
                r#"<path class="edge compensation" d="M {cx} {y1} L {cx} {cy}"><title>compensation of {id}</title></path><g class="compensation-box"><rect x="{x2}" y="{cy}" width="{w2}" height="{COMP_H}" rx="6"/><text x="{tx}" y="{ty}" class="node-line">↺ compensate: {kind}</text></g>
"#,
                cx = x + W / 2,
                y1 = y + H,
                id = esc(&n.id),
                x2 = x + 20,
                w2 = W - 40,
                tx = x + 28,
                ty = cy + 17,
                kind = esc(task.config.kind().name()),
            ));
        }
    }
    out.push_str("</svg>");
    out
}

/// A sparkline of recent runs (oldest first): records as a line, durations as bars.
pub(crate) fn sparkline(points: &[(i64, i64)]) -> String {
    const SW: i64 = 140;
    const SH: i64 = 32;
    if points.is_empty() {
        return String::from(r#"<span class="muted">no runs yet</span>"#);
    }
    let max_r = points.iter().map(|p| p.0).max().unwrap_or(0).max(1);
    let max_d = points.iter().map(|p| p.1).max().unwrap_or(0).max(1);
    let step = SW as f64 / points.len().max(1) as f64;
    let mut bars = String::new();
    let mut line = Vec::new();
    for (i, (records, ms)) in points.iter().enumerate() {
        let x = i as f64 * step;
        let h = (*ms as f64 / max_d as f64 * (SH - 2) as f64).max(1.0);
        bars.push_str(&format!(
            r#"<rect class="spark-bar" x="{x:.1}" y="{:.1}" width="{:.1}" height="{h:.1}"><title>{} records, {}</title></rect>"#,
            SH as f64 - h,
            (step - 1.0).max(1.0),
            records,
            super::html::took(*ms)
        ));
        let y = SH as f64 - 1.0 - *records as f64 / max_r as f64 * (SH - 4) as f64;
        line.push(format!("{:.1},{y:.1}", x + step / 2.0));
    }
    format!(
        r#"<svg class="spark" width="{SW}" height="{SH}" viewBox="0 0 {SW} {SH}" role="img" aria-label="records (line) and durations (bars) of the recent runs">{bars}<polyline class="spark-line" points="{}"/></svg>"#,
        line.join(" ")
    )
}

/// A link's latency history: a bar per check (red when it was down).
pub(crate) fn latency(checks: &[super::Check]) -> String {
    const SW: i64 = 120;
    const SH: i64 = 20;
    if checks.len() < 2 {
        return String::new();
    }
    let max = checks.iter().filter_map(|c| c.1).max().unwrap_or(1).max(1);
    let step = SW as f64 / checks.len() as f64;
    let mut bars = String::new();
    for (i, (at, ms)) in checks.iter().enumerate() {
        let x = i as f64 * step;
        let (class, h, what) = match ms {
            Some(ms) => (
                "spark-bar",
                (*ms as f64 / max as f64 * (SH - 2) as f64).max(1.0),
                format!("{ms} ms"),
            ),
            None => ("spark-down", SH as f64, "down".to_owned()),
        };
        bars.push_str(&format!(
            r#"<rect class="{class}" x="{x:.1}" y="{:.1}" width="{:.1}" height="{h:.1}"><title>{}: {what}</title></rect>"#,
            SH as f64 - h,
            (step - 1.0).max(1.0),
            esc(&super::html::when(Some(*at))),
        ));
    }
    format!(
        r#"<svg class="spark" width="{SW}" height="{SH}" viewBox="0 0 {SW} {SH}" role="img" aria-label="latency of the latest checks">{bars}</svg>"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fanout_join_example_in_layers_with_order_edges_and_a_compensation() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../pipelines/fanout-join.yaml");
        let loaded = crate::catalog::load_file(&path).expect("the example validates");
        let svg = svg(&loaded.plan, &BTreeMap::new());
        for n in &loaded.plan.nodes {
            assert!(
                svg.contains(&format!(r#"class="node st-none" data-node="{}""#, n.id)),
                "{} missing:\n{svg}",
                n.id
            );
        }
        // prepare_staging ··> orders_api and customers_db, warehouse ··> publish.
        assert_eq!(svg.matches(r#"class="edge order""#).count(), 3, "{svg}");
        assert!(svg.contains("↺ compensate: sql_task"), "{svg}");
        // Sources after the pre-step, sinks in the last columns: x grows with the stage.
        let x = |id: &str| {
            let at = svg.find(&format!(r#"data-node="{id}""#)).unwrap();
            let rest = &svg[at..];
            let x = &rest[rest.find(r#"x=""#).unwrap() + 3..];
            x[..x.find('"').unwrap()].parse::<i64>().unwrap()
        };
        assert!(x("prepare_staging") < x("orders_api"));
        assert!(x("orders_api") < x("combine"));
        assert!(x("combine") < x("warehouse"));
        assert!(x("warehouse") < x("publish"));
    }

    #[test]
    fn a_sparkline_per_run() {
        let s = sparkline(&[(10, 1000), (0, 10), (30, 2500)]);
        assert_eq!(s.matches("<rect").count(), 3, "{s}");
        assert!(s.contains("<polyline"), "{s}");
        assert!(sparkline(&[]).contains("no runs yet"));
    }

    #[test]
    fn a_latency_bar_per_check_red_when_down() {
        let s = latency(&[(0, Some(12)), (1, None), (2, Some(40))]);
        assert_eq!(s.matches(r#"class="spark-bar""#).count(), 2, "{s}");
        assert_eq!(s.matches(r#"class="spark-down""#).count(), 1, "{s}");
        assert_eq!(latency(&[(0, Some(1))]), "");
    }
}
