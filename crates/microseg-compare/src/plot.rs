//! The plot: new connections per second against the rule count, one line per contender, as
//! SVG.

use std::collections::BTreeMap;
use std::path::Path;

use crate::contender::Who;
use crate::report::fmt_rules;

pub(crate) fn svg(
    path: &Path,
    rules: &[usize],
    cps: &BTreeMap<(usize, Who), f64>,
    title: &str,
) -> std::io::Result<()> {
    let (w, h, l, r, top, bot) = (760.0, 440.0, 80.0, 180.0, 50.0, 60.0);
    let pw = w - l - r;
    let ph = h - top - bot;
    let ymax = cps
        .values()
        .copied()
        .filter(|x| x.is_finite())
        .fold(0.0f64, f64::max)
        * 1.1;
    let ymax = if ymax > 0.0 { ymax } else { 1.0 };
    let x = |i: usize| {
        l + if rules.len() > 1 {
            pw * i as f64 / (rules.len() - 1) as f64
        } else {
            pw / 2.0
        }
    };
    let y = |v: f64| top + ph - ph * v / ymax;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"{}\" y=\"25\" text-anchor=\"middle\" font-size=\"15\">{title}</text>\n",
        l + pw / 2.0
    );
    for k in 0..=5 {
        let v = ymax * k as f64 / 5.0;
        s += &format!(
            "<line x1=\"{l}\" x2=\"{}\" y1=\"{y0:.1}\" y2=\"{y0:.1}\" stroke=\"#ddd\"/><text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{:.0}</text>\n",
            l + pw,
            l - 6.0,
            y(v) + 4.0,
            v,
            y0 = y(v)
        );
    }
    for (i, n) in rules.iter().enumerate() {
        s += &format!(
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n",
            x(i),
            top + ph + 20.0,
            fmt_rules(*n)
        );
    }
    s += &format!(
        "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">rules (the allowed flow matches the last)</text>\n<text transform=\"translate(18 {:.1}) rotate(-90)\" text-anchor=\"middle\">new TCP connections per second (median)</text>\n",
        l + pw / 2.0,
        h - 15.0,
        top + ph / 2.0
    );
    s += &format!("<rect x=\"{l}\" y=\"{top}\" width=\"{pw}\" height=\"{ph}\" fill=\"none\" stroke=\"#444\"/>\n");
    let colors = [
        (Who::None, "#555555", "4 3"),
        (Who::TcEmpty, "#9467bd", "2 2"),
        (Who::Microseg, "#d62728", ""),
        (Who::Iptables, "#1f77b4", ""),
        (Who::Nft, "#2ca02c", ""),
    ];
    for (k, (who, col, dash)) in colors.iter().enumerate() {
        let pts: Vec<(f64, f64)> = rules
            .iter()
            .enumerate()
            .filter_map(|(i, n)| {
                cps.get(&(*n, *who))
                    .filter(|v| v.is_finite())
                    .map(|v| (x(i), y(*v)))
            })
            .collect();
        let poly: Vec<String> = pts.iter().map(|(a, b)| format!("{a:.1},{b:.1}")).collect();
        s += &format!(
            "<polyline points=\"{}\" fill=\"none\" stroke=\"{col}\" stroke-width=\"2\" stroke-dasharray=\"{dash}\"/>\n",
            poly.join(" ")
        );
        for (a, b) in &pts {
            s += &format!("<circle cx=\"{a:.1}\" cy=\"{b:.1}\" r=\"3.5\" fill=\"{col}\"/>\n");
        }
        let ly = top + 20.0 + 22.0 * k as f64;
        s += &format!(
            "<line x1=\"{}\" x2=\"{}\" y1=\"{ly}\" y2=\"{ly}\" stroke=\"{col}\" stroke-width=\"2\" stroke-dasharray=\"{dash}\"/><text x=\"{}\" y=\"{}\">{}</text>\n",
            l + pw + 15.0,
            l + pw + 45.0,
            l + pw + 52.0,
            ly + 4.0,
            who.name()
        );
    }
    s += "</svg>\n";
    std::fs::write(path, s)
}
