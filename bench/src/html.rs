//! The HTML report: one self-contained page (inline CSS and SVG, no script,
//! nothing fetched) drawn from the run's JSON document, so the page and the
//! JSON can never disagree.
//!
//! Invariants: every string from the document is escaped; a missing or null
//! figure shows as "-" and never panics; plots of empty data say "no data",
//! and no coordinate is ever NaN (degenerate ranges are widened first).

use std::fmt::Write;

use serde_json::Value;

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 320.0;
const MARGIN_LEFT: f64 = 64.0;
const MARGIN_RIGHT: f64 = 150.0;
const MARGIN_TOP: f64 = 16.0;
const MARGIN_BOTTOM: f64 = 40.0;
const COLOURS: [&str; 3] = ["#1f77b4", "#d62728", "#2ca02c"];

fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => esc(s),
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() => format!("{f:.3}"),
            _ => n.to_string(),
        },
        other => esc(&other.to_string()),
    }
}

fn num(v: &Value, digits: usize) -> String {
    v.as_f64()
        .filter(|f| f.is_finite())
        .map_or("-".into(), |f| format!("{f:.digits$}"))
}

/// A line series: a name and finite (x, y) points.
struct Series {
    name: String,
    points: Vec<(f64, f64)>,
    dashed: bool,
}

/// Round tick values covering `lo..=hi`.
fn ticks(lo: f64, hi: f64) -> Vec<f64> {
    let span = (hi - lo).max(1e-9);
    let raw = span / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| span / s <= 6.0)
        .unwrap_or(10.0 * mag);
    let mut out = Vec::new();
    let mut t = (lo / step).ceil() * step;
    while t <= hi + step * 1e-6 && out.len() < 12 {
        out.push(t);
        t += step;
    }
    out
}

/// A line chart. `x_ticks` gives labelled x positions (already in plot
/// units); y runs linearly from zero to the largest value.
fn chart(title: &str, y_label: &str, series: &[Series], x_ticks: &[(f64, String)]) -> String {
    let points: Vec<(f64, f64)> = series
        .iter()
        .flat_map(|s| s.points.iter().copied())
        .collect();
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" role="img"><title>{}</title>"#,
        esc(title)
    );
    if points.is_empty() {
        let _ = write!(
            svg,
            r#"<text x="{}" y="{}" text-anchor="middle">no data</text></svg>"#,
            WIDTH / 2.0,
            HEIGHT / 2.0
        );
        return svg;
    }
    let (mut x_lo, mut x_hi) = points.iter().fold((f64::MAX, f64::MIN), |(lo, hi), p| {
        (lo.min(p.0), hi.max(p.0))
    });
    for (x, _) in x_ticks {
        x_lo = x_lo.min(*x);
        x_hi = x_hi.max(*x);
    }
    if x_hi - x_lo < 1e-9 {
        x_lo -= 0.5;
        x_hi += 0.5;
    }
    let y_max = points.iter().map(|p| p.1).fold(0.0f64, f64::max);
    let y_ticks = ticks(0.0, if y_max > 0.0 { y_max * 1.05 } else { 1.0 });
    let y_hi = y_ticks.last().copied().unwrap_or(1.0).max(y_max).max(1e-9);
    let plot_w = WIDTH - MARGIN_LEFT - MARGIN_RIGHT;
    let plot_h = HEIGHT - MARGIN_TOP - MARGIN_BOTTOM;
    let px = |x: f64| MARGIN_LEFT + (x - x_lo) / (x_hi - x_lo) * plot_w;
    let py = |y: f64| MARGIN_TOP + plot_h - (y / y_hi) * plot_h;
    let _ = write!(
        svg,
        "<rect x=\"{MARGIN_LEFT}\" y=\"{MARGIN_TOP}\" width=\"{plot_w}\" height=\"{plot_h}\" fill=\"none\" stroke=\"#999\"/>"
    );
    for t in &y_ticks {
        let y = py(*t);
        let _ = write!(
            svg,
            "<line x1=\"{MARGIN_LEFT}\" x2=\"{:.1}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#eee\"/><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\" font-size=\"11\">{}</text>",
            MARGIN_LEFT + plot_w,
            MARGIN_LEFT - 6.0,
            y + 4.0,
            trim(*t)
        );
    }
    for (x, label) in x_ticks {
        let x = px(*x);
        let _ = write!(
            svg,
            "<line x1=\"{x:.1}\" x2=\"{x:.1}\" y1=\"{MARGIN_TOP}\" y2=\"{:.1}\" stroke=\"#eee\"/><text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\" font-size=\"11\">{}</text>",
            MARGIN_TOP + plot_h,
            MARGIN_TOP + plot_h + 16.0,
            esc(label)
        );
    }
    let _ = write!(
        svg,
        "<text x=\"14\" y=\"{:.1}\" transform=\"rotate(-90 14 {:.1})\" text-anchor=\"middle\" font-size=\"12\">{}</text>",
        MARGIN_TOP + plot_h / 2.0,
        MARGIN_TOP + plot_h / 2.0,
        esc(y_label)
    );
    for (i, s) in series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let path: Vec<String> = s
            .points
            .iter()
            .map(|(x, y)| format!("{:.1},{:.1}", px(*x), py(*y)))
            .collect();
        let dash = if s.dashed {
            " stroke-dasharray=\"6 4\""
        } else {
            ""
        };
        if path.len() == 1 {
            let _ = write!(
                svg,
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{colour}\"/>",
                px(s.points[0].0),
                py(s.points[0].1)
            );
        } else {
            let _ = write!(svg, "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\"{dash} points=\"{}\"/>", path.join(" "));
        }
        let ly = MARGIN_TOP + 14.0 + i as f64 * 18.0;
        let lx = MARGIN_LEFT + plot_w + 12.0;
        let _ = write!(
            svg,
            "<line x1=\"{lx:.1}\" x2=\"{:.1}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"{colour}\" stroke-width=\"2\"{dash}/><text x=\"{:.1}\" y=\"{ly:.1}\" font-size=\"12\">{}</text>",
            lx + 20.0,
            ly - 4.0,
            ly - 4.0,
            lx + 26.0,
            esc(&s.name)
        );
    }
    svg.push_str("</svg>");
    svg
}

fn trim(v: f64) -> String {
    if v.fract().abs() < 1e-9 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}").trim_end_matches('0').to_string()
    }
}

/// A percentile in 0..=100 placed as HdrHistogram plots do: log10 of
/// 1/(1-p), so each extra nine gets equal room. 100 is drawn at 99.9999.
fn percentile_x(p: f64) -> f64 {
    let p = p.clamp(0.0, 99.9999) / 100.0;
    (1.0 / (1.0 - p)).log10()
}

/// A series from an array of objects, each giving one point through `point`.
fn series(items: &Value, name: &str, point: impl Fn(&Value) -> Option<(f64, f64)>) -> Series {
    let points = items
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(&point)
                .filter(|(x, y)| x.is_finite() && y.is_finite())
                .collect()
        })
        .unwrap_or_default();
    Series {
        name: name.into(),
        points,
        dashed: false,
    }
}

fn curve(doc: &Value, key: &str, name: &str) -> Series {
    series(&doc[key], name, |pt| {
        Some((percentile_x(pt["percentile"].as_f64()?), pt["ms"].as_f64()?))
    })
}

fn timeline(doc: &Value, key: &str, name: &str) -> Series {
    series(&doc["timeline"], name, |s| {
        Some((s["t_s"].as_f64()?, s[key].as_f64()?))
    })
}

fn table_rows(out: &mut String, rows: &[(&str, String)]) {
    for (k, v) in rows {
        let _ = write!(out, "<tr><th>{}</th><td>{v}</td></tr>", esc(k));
    }
}

/// Renders the report page for a run's JSON document.
pub fn render(doc: &Value) -> String {
    let title = doc["title"].as_str().unwrap_or("sluice bench");
    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{t}</title><style>body{{font-family:system-ui,sans-serif;margin:2em;color:#222}}table{{border-collapse:collapse;margin:1em 0}}th,td{{border:1px solid #ccc;padding:4px 10px;text-align:right}}th{{background:#f4f4f4;text-align:left}}.pass{{color:#080;font-weight:bold}}.fail{{color:#c00;font-weight:bold}}</style></head><body><h1>{t}</h1>",
        t = esc(title)
    );
    let m = &doc["machine"];
    let mut facts = String::new();
    table_rows(
        &mut facts,
        &[
            ("target", text(&doc["target"])),
            (
                "machine",
                format!(
                    "{} CPUs, {}, {} GiB, kernel {}",
                    text(&m["cpus"]),
                    text(&m["cpu_model"]),
                    text(&m["memory_gib"]),
                    text(&m["kernel"])
                ),
            ),
            ("host", text(&m["hostname"])),
            ("started (unix s)", text(&doc["started_at_unix_s"])),
            ("units", text(&doc["units"]["mb"])),
        ],
    );
    let _ = write!(out, "<table>{facts}</table><h2>Throughput</h2><table><tr><th></th><th>msgs/s</th><th>MB/s</th><th>messages</th><th>errors</th></tr>");
    for side in ["produce", "consume"] {
        let d = &doc[side];
        let _ = write!(
            out,
            "<tr><th>{side}</th><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            num(&d["msgs_per_s"], 0),
            num(&d["mb_per_s"], 2),
            text(&d["messages"]),
            text(&d["errors"])
        );
    }
    out.push_str("</table>");
    let disk = doc.get("disk_baseline").filter(|d| d.is_object());
    if let Some(d) = disk {
        let pct = |a: &Value, b: &Value| match (a.as_f64(), b.as_f64()) {
            (Some(a), Some(b)) if b > 0.0 => format!("{:.1}%", a / b * 100.0),
            _ => "-".into(),
        };
        let _ = write!(
            out,
            "<p>Disk baseline of {}: write {} MB/s, read {} MB/s ({} in flight of {} bytes). Produce is {} of disk write; consume is {} of disk read.</p>",
            text(&d["dir"]),
            num(&d["write_mb_per_s"], 1),
            num(&d["read_mb_per_s"], 1),
            text(&d["in_flight"]),
            text(&d["block_bytes"]),
            pct(&doc["produce"]["mb_per_s"], &d["write_mb_per_s"]),
            pct(&doc["consume"]["mb_per_s"], &d["read_mb_per_s"]),
        );
    }
    out.push_str("<h2>Latency (ms)</h2><table><tr><th></th><th>p50</th><th>p90</th><th>p99</th><th>p99.9</th><th>p99.99</th><th>max</th><th>count</th></tr>");
    for (name, key) in [
        ("publish", "publish_latency_ms"),
        ("end to end", "e2e_latency_ms"),
    ] {
        let d = &doc[key];
        let _ = write!(out, "<tr><th>{name}</th>");
        for k in ["p50", "p90", "p99", "p999", "p9999", "max"] {
            let _ = write!(out, "<td>{}</td>", num(&d[k], 3));
        }
        let _ = write!(out, "<td>{}</td></tr>", text(&d["count"]));
    }
    out.push_str("</table>");
    let pct_ticks: Vec<(f64, String)> = [
        (0.0, "0%"),
        (90.0, "90%"),
        (99.0, "99%"),
        (99.9, "99.9%"),
        (99.99, "99.99%"),
        (99.999, "99.999%"),
    ]
    .iter()
    .map(|(p, l)| (percentile_x(*p), l.to_string()))
    .collect();
    out.push_str(&chart(
        "latency by percentile",
        "latency (ms)",
        &[
            curve(doc, "publish_latency_curve", "publish"),
            curve(doc, "e2e_latency_curve", "end to end"),
        ],
        &pct_ticks,
    ));
    out.push_str("<h2>Throughput over time</h2>");
    let mut series = vec![
        timeline(doc, "produce_mb_per_s", "produce MB/s"),
        timeline(doc, "consume_mb_per_s", "consume MB/s"),
    ];
    if let (Some(d), Some(last)) = (disk, series[0].points.last().map(|p| p.0)) {
        if let Some(w) = d["write_mb_per_s"].as_f64().filter(|w| w.is_finite()) {
            let first = series[0].points.first().map_or(0.0, |p| p.0);
            series.push(Series {
                name: "disk write".into(),
                points: vec![(first, w), (last, w)],
                dashed: true,
            });
        }
    }
    let (t_lo, t_hi) = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .fold((f64::MAX, f64::MIN), |(lo, hi), x| (lo.min(x), hi.max(x)));
    let t_ticks: Vec<(f64, String)> = if t_lo <= t_hi {
        ticks(t_lo, t_hi)
            .into_iter()
            .map(|t| (t, format!("{}s", trim(t))))
            .collect()
    } else {
        Vec::new()
    };
    out.push_str(&chart("throughput over time", "MB/s", &series, &t_ticks));
    let v = &doc["verify"];
    let verdict = match (v["enabled"].as_bool(), v["passed"].as_bool()) {
        (Some(true), Some(true)) => "<span class=\"pass\">PASSED</span>".to_string(),
        (Some(true), _) => "<span class=\"fail\">FAILED</span>".to_string(),
        _ => "not run".to_string(),
    };
    let _ = write!(
        out,
        "<h2>Verification</h2><p>{verdict}: acked {}, consumed {}, missing {}, duplicates {}.</p><h2>Configuration</h2><table>",
        text(&v["acked"]),
        text(&v["consumed"]),
        text(&v["missing"]),
        text(&v["duplicates"])
    );
    if let Some(config) = doc["config"].as_object() {
        for (k, val) in config {
            let _ = write!(out, "<tr><th>{}</th><td>{}</td></tr>", esc(k), text(val));
        }
    }
    out.push_str("</table></body></html>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn renders_a_full_report_safely() {
        let doc = json!({
            "title": "run <script>alert(1)</script>",
            "machine": {"cpus": 2, "kernel": "6.1"},
            "produce": {"msgs_per_s": 1000.0, "mb_per_s": 1.0, "messages": 10, "errors": 0},
            "publish_latency_ms": {"p50": 1.0, "max": 2.0},
            "publish_latency_curve": [{"percentile": 50.0, "ms": 1.0}, {"percentile": 100.0, "ms": 2.0}],
            "e2e_latency_curve": [{"percentile": 50.0, "ms": 1.5}],
            "timeline": [{"t_s": 1.0, "produce_mb_per_s": 1.0, "consume_mb_per_s": 1.0}],
            "verify": {"enabled": true, "passed": true},
            "disk_baseline": {"dir": "/d", "write_mb_per_s": 5.0, "read_mb_per_s": 6.0},
            "config": {"preset": "omb-max"}
        });
        let html = render(&doc);
        assert!(html.contains("<svg"));
        assert!(html.contains("publish") && html.contains("end to end"));
        assert!(html.contains("run &lt;script&gt;"));
        assert!(!html.contains("<script>"));
        assert!(!html.contains("NaN"));
        assert!(html.contains("PASSED"));
        assert!(html.contains("disk write"));
    }

    #[test]
    fn renders_an_empty_document() {
        let html = render(&json!({}));
        assert!(html.contains("no data"));
        assert!(!html.contains("NaN"));
    }
}
