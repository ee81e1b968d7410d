//! Plots of one run, drawn with plotters as SVG and PNG: latency over time with fault
//! periods shaded, availability per window, latency histograms per operation kind, and load
//! per node over time.
//!
//! Text is drawn with an embedded DejaVu Sans (through ab_glyph), so no system font library
//! is needed and the same run draws byte-identical files. Load per node is what every node
//! (ring, guild, data, API, gateway) counted itself serving, per second; a report without
//! node counts (an older schema) draws what the clients saw instead (REST requests answered,
//! dispatches pushed).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::checks::Window;
use crate::history::{History, OpKind, Outcome};
use crate::report::NodeLoad;

/// The font family every label uses.
const FAMILY: &str = "sans-serif";
const SIZE: (u32, u32) = (900, 450);

/// Latency histogram bucket edges, in ms.
const EDGES_MS: [f64; 14] = [
    0.0, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1_000.0, 2_000.0, 5_000.0, 10_000.0,
];

/// What the plots are drawn from.
pub struct PlotInput<'a> {
    /// The run's history.
    pub history: &'a History,
    /// Fault periods as `(start_ms, end_ms)`.
    pub fault_windows_ms: Vec<(u64, u64)>,
    /// Availability per window.
    pub windows: &'a [Window],
    /// The availability objective.
    pub objective: f64,
    /// The run's simulated length.
    pub duration_ms: u64,
    /// What each node served, by node name; empty if the run did not count.
    pub node_load: &'a BTreeMap<String, NodeLoad>,
}

fn register_font() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // The bytes are a valid TrueType font shipped by the dejavu crate.
        let _ = plotters::style::register_font(FAMILY, FontStyle::Normal, dejavu::sans::regular());
    });
}

type DrawResult = Result<(), Box<dyn std::error::Error>>;

/// Draws every plot into `dir` as SVG and PNG; returns the files written.
pub fn write_all(input: &PlotInput<'_>, dir: &Path) -> Result<Vec<PathBuf>, String> {
    register_font();
    let mut written = Vec::new();
    // Each plot is drawn twice, once per backend, by the same generic function.
    macro_rules! both {
        ($name:literal, $draw:ident) => {
            let svg_path = dir.join(concat!($name, ".svg"));
            let area = SVGBackend::new(&svg_path, SIZE).into_drawing_area();
            $draw(input, area).map_err(|e| format!("{}: {e}", svg_path.display()))?;
            written.push(svg_path);
            let png_path = dir.join(concat!($name, ".png"));
            let area = BitMapBackend::new(&png_path, SIZE).into_drawing_area();
            $draw(input, area).map_err(|e| format!("{}: {e}", png_path.display()))?;
            written.push(png_path);
        };
    }
    both!("latency", latency_over_time);
    both!("availability", availability);
    both!("latency_histogram", histograms);
    both!("load", load);
    Ok(written)
}

fn seconds(ns: u64) -> f64 {
    ns as f64 / 1e9
}

fn millis(ns: u64) -> f64 {
    ns as f64 / 1e6
}

/// Points of a plot: (simulated s, value).
type Points = Vec<(f64, f64)>;

/// Per one-second bucket: the median and the worst latency of the points in it.
fn per_second(points: &[(f64, f64)]) -> (Points, Points) {
    let mut buckets: BTreeMap<u64, Vec<f64>> = BTreeMap::new();
    for &(t, v) in points {
        buckets.entry(t as u64).or_default().push(v);
    }
    let mut p50 = Vec::new();
    let mut max = Vec::new();
    for (second, mut values) in buckets {
        values.sort_by(f64::total_cmp);
        let t = second as f64 + 0.5;
        p50.push((t, values[values.len() / 2]));
        max.push((t, values[values.len() - 1]));
    }
    (p50, max)
}

fn op_latencies(history: &History, sends: bool) -> Vec<(f64, f64)> {
    history
        .ops
        .iter()
        .filter(|op| matches!(op.kind, OpKind::Send { .. }) == sends)
        .filter(|op| matches!(op.outcome, Outcome::Sent { .. } | Outcome::Read { .. }))
        .map(|op| {
            let took = op.completed_ns.saturating_sub(op.invoked_ns);
            (seconds(op.invoked_ns), millis(took))
        })
        .collect()
}

fn delivery_latencies(history: &History) -> Vec<(f64, f64)> {
    let mut invoked: BTreeMap<u64, u64> = BTreeMap::new();
    for op in &history.ops {
        if let Outcome::Sent { message_id } = op.outcome {
            invoked.insert(message_id, op.invoked_ns);
        }
    }
    history
        .deliveries
        .iter()
        .filter_map(|d| {
            let sent = invoked.get(&d.message_id?)?;
            Some((seconds(*sent), millis(d.at_ns.saturating_sub(*sent))))
        })
        .collect()
}

fn shade_faults<DB: DrawingBackend>(
    chart: &mut ChartContext<
        '_,
        DB,
        Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
    >,
    input: &PlotInput<'_>,
    top: f64,
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    let bands = input.fault_windows_ms.iter().map(|&(start, end)| {
        let (x0, x1) = (start as f64 / 1000.0, end as f64 / 1000.0);
        Rectangle::new([(x0, 0.0), (x1, top)], RED.mix(0.15).filled())
    });
    let drawn = chart.draw_series(bands)?;
    // A legend entry only for a run that had faults.
    if !input.fault_windows_ms.is_empty() {
        drawn
            .label("fault active")
            .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], RED.mix(0.3).filled()));
    }
    Ok(())
}

/// Draws the chart's legend in the style every plot shares, and writes the area out.
fn finish<'a, DB: DrawingBackend + 'a, CT: CoordTranslate>(
    chart: &mut ChartContext<'a, DB, CT>,
    area: &DrawingArea<DB, Shift>,
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    chart
        .configure_series_labels()
        .label_font((FAMILY, 12))
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    area.present()?;
    Ok(())
}

fn latency_over_time<DB: DrawingBackend>(
    input: &PlotInput<'_>,
    area: DrawingArea<DB, Shift>,
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    area.fill(&WHITE)?;
    let (send_p50, send_max) = per_second(&op_latencies(input.history, true));
    let (read_p50, _) = per_second(&op_latencies(input.history, false));
    let (deliver_p50, deliver_max) = per_second(&delivery_latencies(input.history));
    let lines: [(&str, Points, RGBColor); 5] = [
        ("send p50", send_p50, BLUE),
        ("send max", send_max, BLUE),
        ("read p50", read_p50, GREEN),
        ("deliver p50", deliver_p50, MAGENTA),
        ("deliver max", deliver_max, MAGENTA),
    ];
    let top = lines
        .iter()
        .flat_map(|(_, points, _)| points.iter().map(|p| p.1))
        .fold(10.0_f64, f64::max)
        * 1.1;
    let x_end = input.duration_ms as f64 / 1000.0;
    let mut chart = ChartBuilder::on(&area)
        .caption("latency per second, faults shaded", (FAMILY, 20))
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..x_end, 0.0..top)?;
    chart
        .configure_mesh()
        .x_desc("simulated time (s)")
        .y_desc("latency (ms)")
        .label_style((FAMILY, 12))
        .draw()?;
    shade_faults(&mut chart, input, top)?;
    for (name, points, color) in lines {
        let dashed = name.ends_with("max");
        let style = if dashed {
            color.mix(0.5).stroke_width(1)
        } else {
            color.stroke_width(2)
        };
        chart
            .draw_series(LineSeries::new(points, style))?
            .label(name)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 12, y)], style));
    }
    finish(&mut chart, &area)
}

fn availability<DB: DrawingBackend>(
    input: &PlotInput<'_>,
    area: DrawingArea<DB, Shift>,
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    area.fill(&WHITE)?;
    let lowest = input
        .windows
        .iter()
        .map(|w| w.availability * 100.0)
        .fold(input.objective * 100.0, f64::min);
    let bottom = (lowest - (100.0 - lowest) * 0.2 - 0.001).max(0.0);
    let width_s = match input.windows {
        [first, second, ..] => second.start_s - first.start_s,
        _ => input.duration_ms as f64 / 1000.0,
    };
    let x_end = (input.duration_ms as f64 / 1000.0).max(width_s);
    let mut chart = ChartBuilder::on(&area)
        .caption("availability per window (answered in time)", (FAMILY, 20))
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..x_end, bottom..100.0)?;
    chart
        .configure_mesh()
        .x_desc("window start, simulated time (s)")
        .y_desc("availability (%)")
        .label_style((FAMILY, 12))
        .draw()?;
    shade_faults(&mut chart, input, 100.0)?;
    let bars = input.windows.iter().map(|w| {
        let color = if w.availability >= input.objective {
            GREEN.mix(0.6)
        } else {
            RED.mix(0.8)
        };
        Rectangle::new(
            [
                (w.start_s + width_s * 0.05, bottom),
                (w.start_s + width_s * 0.95, w.availability * 100.0),
            ],
            color.filled(),
        )
    });
    chart.draw_series(bars)?;
    let objective = input.objective * 100.0;
    chart
        .draw_series(LineSeries::new(
            [(0.0, objective), (x_end, objective)],
            BLACK.stroke_width(1),
        ))?
        .label(format!("objective {objective:.2}%"))
        .legend(|(x, y)| PathElement::new([(x, y), (x + 12, y)], BLACK));
    finish(&mut chart, &area)
}

/// Counts per bucket of [`EDGES_MS`] (the last bucket holds everything above).
fn bucket_counts(latencies_ms: impl Iterator<Item = f64>) -> Vec<u64> {
    let mut counts = vec![0u64; EDGES_MS.len()];
    for ms in latencies_ms {
        let bucket = EDGES_MS.iter().rposition(|&edge| ms >= edge).unwrap_or(0);
        counts[bucket] += 1;
    }
    counts
}

fn histograms<DB: DrawingBackend>(input: &PlotInput<'_>, area: DrawingArea<DB, Shift>) -> DrawResult
where
    DB::ErrorType: 'static,
{
    area.fill(&WHITE)?;
    let kinds = [
        (
            "send",
            bucket_counts(op_latencies(input.history, true).into_iter().map(|p| p.1)),
            BLUE,
        ),
        (
            "read",
            bucket_counts(op_latencies(input.history, false).into_iter().map(|p| p.1)),
            GREEN,
        ),
        (
            "deliver",
            bucket_counts(delivery_latencies(input.history).into_iter().map(|p| p.1)),
            MAGENTA,
        ),
    ];
    // Shares, so kinds with very different counts fit one axis.
    let shares: Vec<(&str, Vec<f64>, RGBColor)> = kinds
        .into_iter()
        .map(|(name, counts, color)| {
            let total = counts.iter().sum::<u64>().max(1) as f64;
            (
                name,
                counts.iter().map(|&c| c as f64 / total * 100.0).collect(),
                color,
            )
        })
        .collect();
    let buckets = EDGES_MS.len();
    let mut chart = ChartBuilder::on(&area)
        .caption("latency histogram per operation kind", (FAMILY, 20))
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..buckets as f64, 0.0..100.0)?;
    chart
        .configure_mesh()
        .x_desc("latency at least (ms)")
        .y_desc("share of operations (%)")
        .x_labels(buckets)
        .x_label_formatter(&|x| {
            let index = (*x as usize).min(EDGES_MS.len() - 1);
            format!("{}", EDGES_MS[index])
        })
        .label_style((FAMILY, 11))
        .draw()?;
    let width = 0.8 / shares.len() as f64;
    for (k, (name, values, color)) in shares.into_iter().enumerate() {
        let bars = values.into_iter().enumerate().map(move |(bucket, share)| {
            let x0 = bucket as f64 + 0.1 + k as f64 * width;
            Rectangle::new([(x0, 0.0), (x0 + width, share)], color.mix(0.8).filled())
        });
        chart
            .draw_series(bars)?
            .label(name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled()));
    }
    finish(&mut chart, &area)
}

/// The series of the load plot: requests per second per node, or what the clients saw.
fn load_series(input: &PlotInput<'_>) -> (String, Vec<(String, Vec<u64>)>) {
    let seconds_total = (input.duration_ms / 1000).max(1) as usize + 1;
    if !input.node_load.is_empty() {
        let series = input
            .node_load
            .iter()
            .map(|(name, load)| {
                let mut counts = load.per_second.clone();
                counts.resize(seconds_total, 0);
                (format!("{name} ({} requests)", load.total), counts)
            })
            .collect();
        return ("requests each node served".to_string(), series);
    }
    let mut api = vec![0u64; seconds_total];
    let mut gateway = vec![0u64; seconds_total];
    for op in &input.history.ops {
        let second = (op.invoked_ns / 1_000_000_000) as usize;
        if let Some(slot) = api.get_mut(second) {
            *slot += 1;
        }
    }
    for delivery in &input.history.deliveries {
        let second = (delivery.at_ns / 1_000_000_000) as usize;
        if let Some(slot) = gateway.get_mut(second) {
            *slot += 1;
        }
    }
    let series = vec![
        ("api: requests answered".to_string(), api),
        ("gateway: dispatches pushed".to_string(), gateway),
    ];
    ("load per node, as the clients saw it".to_string(), series)
}

fn load<DB: DrawingBackend>(input: &PlotInput<'_>, area: DrawingArea<DB, Shift>) -> DrawResult
where
    DB::ErrorType: 'static,
{
    area.fill(&WHITE)?;
    let (caption, series) = load_series(input);
    let top = series
        .iter()
        .flat_map(|(_, counts)| counts.iter().copied())
        .max()
        .unwrap_or(1)
        .max(1) as f64
        * 1.1;
    let x_end = input.duration_ms as f64 / 1000.0;
    let mut chart = ChartBuilder::on(&area)
        .caption(caption, (FAMILY, 20))
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..x_end, 0.0..top)?;
    chart
        .configure_mesh()
        .x_desc("simulated time (s)")
        .y_desc("per second")
        .label_style((FAMILY, 12))
        .draw()?;
    shade_faults(&mut chart, input, top)?;
    for (index, (name, counts)) in series.into_iter().enumerate() {
        let color = Palette99::pick(index).to_rgba();
        let points = counts
            .into_iter()
            .enumerate()
            .map(|(second, count)| (second as f64 + 0.5, count as f64));
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))?
            .label(name)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 12, y)], color));
    }
    finish(&mut chart, &area)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checks::build::{message, read, send};

    #[test]
    fn buckets_count_each_latency_once_by_its_lower_edge() {
        let counts = bucket_counts([0.5, 1.0, 1.5, 99.0, 100.0, 20_000.0].into_iter());
        assert_eq!(counts[0], 1); // 0.5
        assert_eq!(counts[1], 2); // 1.0, 1.5
        assert_eq!(counts[6], 1); // 99 in [50, 100)
        assert_eq!(counts[7], 1); // 100
        assert_eq!(counts[13], 1); // above 10 s
        assert_eq!(counts.iter().sum::<u64>(), 6);
    }

    #[test]
    fn every_plot_is_written_as_svg_and_png_with_its_labels() {
        let mut ops = vec![
            send(1, 7, 1_000_000_000, 100),
            read(1, 7, 2_000_000_000, 10, &[100]),
        ];
        ops[0].completed_ns = 1_040_000_000;
        let history = History {
            ops,
            deliveries: vec![message(0, 1, 7, 100, 1_050_000_000)],
            ..History::default()
        };
        let windows = [Window {
            start_s: 0.0,
            ops: 2,
            ok: 2,
            fast: 2,
            availability: 1.0,
        }];
        let input = PlotInput {
            history: &history,
            fault_windows_ms: vec![(1_500, 2_500)],
            windows: &windows,
            objective: 0.9999,
            duration_ms: 5_000,
            node_load: &BTreeMap::new(),
        };
        let dir = std::env::temp_dir().join(format!("chat-plots-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let written = write_all(&input, &dir).unwrap();
        assert_eq!(written.len(), 8);
        let svg = std::fs::read_to_string(dir.join("latency.svg")).unwrap();
        assert!(svg.contains("simulated time (s)"), "axis label drawn");
        let svg = std::fs::read_to_string(dir.join("load.svg")).unwrap();
        assert!(
            svg.contains("as the clients saw it"),
            "no node counts: the clients' view"
        );
        assert!(svg.contains("fault active"), "legend for the shaded faults");

        // Without faults, no legend entry for them.
        let quiet = PlotInput {
            fault_windows_ms: Vec::new(),
            ..input
        };
        write_all(&quiet, &dir).unwrap();
        let svg = std::fs::read_to_string(dir.join("latency.svg")).unwrap();
        assert!(!svg.contains("fault active"), "no faults, no legend entry");
        let png = std::fs::read(dir.join("availability.png")).unwrap();
        assert_eq!(&png[1..4], b"PNG");

        // With node counts, one series per node, named with its total.
        let mut node_load = BTreeMap::new();
        for (name, per_second) in [("ring-1", vec![3, 4]), ("api-1", vec![1, 0, 2])] {
            let load = NodeLoad {
                total: per_second.iter().sum(),
                by_kind: BTreeMap::from([("any".to_string(), per_second.iter().sum())]),
                per_second,
            };
            node_load.insert(name.to_string(), load);
        }
        let counted = PlotInput {
            node_load: &node_load,
            ..quiet
        };
        let (caption, series) = load_series(&counted);
        assert_eq!(caption, "requests each node served");
        assert_eq!(
            series[0],
            ("api-1 (3 requests)".to_string(), vec![1, 0, 2, 0, 0, 0])
        );
        assert_eq!(
            series[1],
            ("ring-1 (7 requests)".to_string(), vec![3, 4, 0, 0, 0, 0])
        );
        write_all(&counted, &dir).unwrap();
        let svg = std::fs::read_to_string(dir.join("load.svg")).unwrap();
        assert!(svg.contains("ring-1 (7 requests)"), "a ring node's series");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
