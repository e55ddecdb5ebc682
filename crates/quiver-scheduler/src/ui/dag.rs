//! The stage DAG of a query as an SVG drawing, laid out server-side.
//!
//! Stages are placed in columns by depth (a stage sits right of every stage
//! it reads), one box per stage with its state, tasks and rows, and an arrow
//! from each input stage to its reader. No script is needed to show it.

use std::collections::BTreeMap;
use std::fmt::Write;

use quiver_core::api::StageInfo;

const BOX_W: usize = 190;
const BOX_H: usize = 64;
const GAP_X: usize = 60;
const GAP_Y: usize = 18;
const PAD: usize = 10;

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Depth of each stage: 0 for stages that read no other stage.
fn depths(stages: &[StageInfo]) -> BTreeMap<usize, usize> {
    let by_id: BTreeMap<usize, &StageInfo> = stages.iter().map(|s| (s.id, s)).collect();
    let mut depth: BTreeMap<usize, usize> = BTreeMap::new();
    fn visit(
        id: usize,
        by_id: &BTreeMap<usize, &StageInfo>,
        depth: &mut BTreeMap<usize, usize>,
        seen: &mut Vec<usize>,
    ) -> usize {
        if let Some(d) = depth.get(&id) {
            return *d;
        }
        if seen.contains(&id) {
            return 0; // a cycle would be a bug upstream; draw rather than loop
        }
        seen.push(id);
        let d = by_id
            .get(&id)
            .map(|s| {
                s.inputs
                    .iter()
                    .filter(|i| by_id.contains_key(i))
                    .map(|i| visit(*i, by_id, depth, seen) + 1)
                    .max()
                    .unwrap_or(0)
            })
            .unwrap_or(0);
        depth.insert(id, d);
        d
    }
    for s in stages {
        visit(s.id, &by_id, &mut depth, &mut Vec::new());
    }
    depth
}

/// The SVG for a query's stages.
pub fn render(stages: &[StageInfo]) -> String {
    if stages.is_empty() {
        return String::new();
    }
    let depth = depths(stages);
    let mut columns: BTreeMap<usize, Vec<&StageInfo>> = BTreeMap::new();
    for s in stages {
        columns.entry(depth[&s.id]).or_default().push(s);
    }
    let mut pos: BTreeMap<usize, (usize, usize)> = BTreeMap::new();
    for (col, list) in &columns {
        for (row, s) in list.iter().enumerate() {
            pos.insert(s.id, (PAD + col * (BOX_W + GAP_X), PAD + row * (BOX_H + GAP_Y)));
        }
    }
    let width = PAD * 2 + columns.len() * BOX_W + columns.len().saturating_sub(1) * GAP_X;
    let rows = columns.values().map(Vec::len).max().unwrap_or(1);
    let height = PAD * 2 + rows * BOX_H + rows.saturating_sub(1) * GAP_Y;

    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg class="dag" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" aria-label="stage graph">"#
    );
    svg.push_str(
        r#"<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" class="dag-arrow"/></marker></defs>"#,
    );
    for s in stages {
        let (x2, y2) = pos[&s.id];
        for input in &s.inputs {
            if let Some((x1, y1)) = pos.get(input) {
                let (sx, sy) = (x1 + BOX_W, y1 + BOX_H / 2);
                let (ex, ey) = (x2, y2 + BOX_H / 2);
                let mid = (sx + ex) / 2;
                let _ = write!(
                    svg,
                    r#"<path class="dag-edge" d="M{sx},{sy} C{mid},{sy} {mid},{ey} {ex},{ey}" marker-end="url(#arrow)"/>"#
                );
            }
        }
    }
    for s in stages {
        let (x, y) = pos[&s.id];
        let state = escape(s.state.as_str());
        let _ = write!(
            svg,
            r##"<g class="dag-node state-{state}"><a href="#stage-{id}"><rect x="{x}" y="{y}" width="{BOX_W}" height="{BOX_H}" rx="6"/><text x="{tx}" y="{t1}" class="dag-title">Stage {id} · {state}</text><text x="{tx}" y="{t2}">tasks {done}/{total} · {parts} partitions</text><text x="{tx}" y="{t3}">rows out {rows}</text></a></g>"##,
            id = s.id,
            tx = x + 10,
            t1 = y + 20,
            t2 = y + 38,
            t3 = y + 55,
            done = s.progress.tasks_done,
            total = s.progress.tasks_total,
            parts = s.partitions,
            rows = s.metrics.output_rows,
        );
    }
    svg.push_str("</svg>");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;
    use quiver_core::api::{Progress, StageMetrics, StageState};

    fn stage(id: usize, inputs: Vec<usize>) -> StageInfo {
        StageInfo {
            id,
            state: StageState::Succeeded,
            attempt: 0,
            partitions: 2,
            inputs,
            outputs: vec![],
            progress: Progress::default(),
            metrics: StageMetrics::default(),
            plan: String::new(),
            tasks: vec![],
            error: None,
        }
    }

    #[test]
    fn readers_sit_right_of_their_inputs() {
        let stages = vec![
            stage(1, vec![]),
            stage(2, vec![]),
            stage(3, vec![1, 2]),
            stage(4, vec![3]),
        ];
        let d = depths(&stages);
        assert_eq!((d[&1], d[&2], d[&3], d[&4]), (0, 0, 1, 2));
        let svg = render(&stages);
        assert_eq!(svg.matches("class=\"dag-edge\"").count(), 3);
        assert_eq!(svg.matches("<rect").count(), 4);
        assert!(svg.contains("Stage 4 · succeeded"));
    }
}
