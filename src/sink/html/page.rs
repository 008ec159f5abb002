//! The page around the charts: facts, findings, the marks on the time axis and the
//! diagnosis, with inline CSS. No script, no outside resource.

use std::io::Write;

use super::ChartData;
use super::charts::{self, severity_color};
use crate::model::{Finding, Severity};
use crate::sink::report::{self, SnapshotReport};
use crate::units::format_seconds;

/// What one page shows.
pub struct Page<'a> {
    /// "tfwatch run: python3 train.py".
    pub title: String,
    /// Label and value, shown as a table under the title ("outcome", "hang detected").
    pub facts: Vec<(String, String)>,
    /// The watched command line, where known: shown in the facts cut to
    /// [`COMMAND_SHOWN_CHARS`], and whole once at the end of the page when longer (an
    /// argv may be megabytes).
    pub command: Option<String>,
    pub data: &'a ChartData,
    /// Every finding raised (the most severe version of each, the newest among equals), most severe first.
    pub findings: Vec<Finding>,
    /// The triage report (what the text report says), and what it is ("the diagnosis at
    /// the hang", "the last two samples").
    pub diagnosis: Option<(&'a SnapshotReport, String)>,
    /// Lines shown at the end (sources that could not be read, how the page was made).
    pub notes: Vec<String>,
}

/// At most this many characters of the title are shown (in `<title>` and the heading).
pub const TITLE_CHARS: usize = 160;

/// At most this many characters of the command line are shown in the facts.
pub const COMMAND_SHOWN_CHARS: usize = 500;

/// `text` cut to `max` characters, saying how many were left out.
pub fn shorten(text: &str, max: usize) -> std::borrow::Cow<'_, str> {
    match text.char_indices().nth(max) {
        None => std::borrow::Cow::Borrowed(text),
        Some((cut, _)) => std::borrow::Cow::Owned(format!(
            "{}… ({} more characters)",
            &text[..cut],
            text[cut..].chars().count()
        )),
    }
}

/// [`escape`]d text isolated from the text around it (`<bdi>`): a right-to-left name
/// of a watched process cannot reorder tfwatch's words beside it. For element content
/// that may hold a watched process's text.
pub fn isolate(text: &str) -> String {
    format!("<bdi>{}</bdi>", escape(text))
}

/// Text made safe inside HTML (element content and quoted attributes): control
/// characters become visible escapes (as in the text outputs), then `& < > " '` become
/// entities. Every string that may come from a watched process goes through it.
pub fn escape(text: &str) -> String {
    let text = crate::units::escape_controls(text, true);
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            other => out.push(other),
        }
    }
    out
}

const STYLE: &str = "
body { font-family: sans-serif; margin: 24px auto; max-width: 1200px; color: #222; background: #fff; }
h1 { font-size: 24px; margin: 0 0 12px 0; }
h2 { font-size: 19px; margin: 28px 0 10px 0; border-bottom: 1px solid #ddd; padding-bottom: 4px; }
h3 { font-size: 16px; margin: 18px 0 4px 0; }
table { border-collapse: collapse; }
td, th { padding: 3px 10px 3px 0; text-align: left; vertical-align: top; }
table.facts td:first-child { color: #666; }
table.marks td, table.marks th { border-bottom: 1px solid #eee; padding-right: 14px; }
figure { margin: 0 0 8px 0; }
figure svg { max-width: 100%; height: auto; border: 1px solid #e4e4e4; }
.legend { font-size: 14px; margin: 0 0 4px 0; }
.key { margin-right: 16px; white-space: nowrap; }
.key i { display: inline-block; width: 14px; height: 10px; margin-right: 5px; vertical-align: middle; }
figcaption { color: #555; font-size: 14px; margin-top: 2px; }
p.none { color: #777; background: #f6f6f6; border: 1px dashed #ccc; padding: 14px; margin: 0; }
.badge { display: inline-block; color: #fff; border-radius: 3px; padding: 1px 7px; font-size: 13px; font-weight: bold; }
.finding { border-left: 5px solid #ccc; padding: 4px 0 4px 12px; margin: 10px 0; }
.finding ul { margin: 4px 0; }
.remedy { color: #333; }
.verdict { border-color: #333; }
.updated { background: #eef; color: #225; padding: 0 4px; font-size: 90%; }
pre { white-space: pre-wrap; overflow-wrap: anywhere; background: #f7f7f7; border: 1px solid #e4e4e4; padding: 12px; overflow-x: auto; font-size: 13px; line-height: 1.35; }
footer { color: #888; font-size: 13px; margin-top: 28px; }
";

fn color_hex(severity: Severity) -> String {
    let c = severity_color(severity);
    format!("#{:02x}{:02x}{:02x}", c.0, c.1, c.2)
}

fn badge(severity: Severity) -> String {
    format!(
        "<span class=\"badge\" style=\"background:{}\">{}</span>",
        color_hex(severity),
        severity
    )
}

/// Writes the whole page.
pub fn write_page(page: &Page, out: &mut impl Write) -> std::io::Result<()> {
    let mut html = String::with_capacity(256 * 1024);
    render(page, &mut html)?;
    out.write_all(html.as_bytes())?;
    out.flush()
}

/// The verdict of the stacks, above the findings and the charts: per process, what
/// its stacks say and who waits for what. Nothing when no stacks were explained.
fn render_verdict(page: &Page, html: &mut String) -> std::io::Result<()> {
    use std::fmt::Write as _;
    let w = |r: std::fmt::Result| r.map_err(std::io::Error::other);
    let Some((report, _)) = &page.diagnosis else {
        return Ok(());
    };
    let Some(stacks) = report.stacks.as_ref().filter(|s| !s.explained.is_empty()) else {
        return Ok(());
    };
    html.push_str("<h2 id=\"verdict\">Verdict</h2>\n");
    for explained in &stacks.explained {
        w(writeln!(
            html,
            "<div class=\"finding verdict\"><b>{}</b>",
            isolate(&report::verdict_line(explained, &report.findings))
        ))?;
        html.push_str("<ul>\n");
        for line in explained.lines.iter().chain(explained.idle_line().as_ref()) {
            w(writeln!(html, "<li>{}</li>", isolate(line.trim_start())))?;
        }
        html.push_str("</ul>\n");
        if let Some(meaning) = &explained.meaning {
            w(writeln!(
                html,
                "<div class=\"remedy\"><b>What it means:</b> {}</div>",
                isolate(meaning)
            ))?;
        }
        html.push_str("</div>\n");
    }
    Ok(())
}

fn render(page: &Page, html: &mut String) -> std::io::Result<()> {
    use std::fmt::Write as _;
    let w = |r: std::fmt::Result| r.map_err(std::io::Error::other);
    w(write!(
        html,
        "<!DOCTYPE html>\n<html lang=\"en\" dir=\"ltr\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"generator\" content=\"tfwatch {}\">\n<title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n",
        env!("CARGO_PKG_VERSION"),
        escape(&shorten(&page.title, TITLE_CHARS))
    ))?;
    w(writeln!(
        html,
        "<h1>{}</h1>",
        isolate(&shorten(&page.title, TITLE_CHARS))
    ))?;
    html.push_str("<table class=\"facts\">\n");
    for (label, value) in &page.facts {
        w(writeln!(
            html,
            "<tr><td>{}</td><td>{}</td></tr>",
            escape(label),
            isolate(value)
        ))?;
    }
    let command_cut = page
        .command
        .as_deref()
        .map(|c| (c, shorten(c, COMMAND_SHOWN_CHARS)));
    if let Some((whole, shown)) = &command_cut {
        w(writeln!(
            html,
            "<tr><td>command</td><td>{}{}</td></tr>",
            isolate(shown),
            if shown.len() == whole.len() {
                ""
            } else {
                " (the whole command line is at the end of the page)"
            }
        ))?;
    }
    html.push_str("</table>\n");

    render_verdict(page, html)?;

    html.push_str("<h2 id=\"findings\">Findings</h2>\n");
    if page.findings.is_empty() {
        html.push_str("<p>No findings.</p>\n");
    }
    for finding in &page.findings {
        w(writeln!(
            html,
            "<div class=\"finding\" style=\"border-color:{}\">{} <b>{}</b>: {} <span style=\"color:#777\">(confidence {:.0} %)</span>",
            color_hex(finding.severity),
            badge(finding.severity),
            escape(finding.kind.as_str()),
            isolate(&finding.summary),
            finding.confidence * 100.0
        ))?;
        // Rewritten by the stacks taken at the hang: what it says now, not before.
        if finding
            .evidence
            .iter()
            .any(|e| crate::model::stacks::is_paused_line(e))
        {
            html.push_str(" <span class=\"updated\">updated by the stacks</span>");
        }
        if !finding.evidence.is_empty() {
            html.push_str("<ul>\n");
            for line in &finding.evidence {
                w(writeln!(html, "<li>{}</li>", isolate(line)))?;
            }
            html.push_str("</ul>\n");
        }
        if !finding.remedy.is_empty() {
            w(writeln!(
                html,
                "<div class=\"remedy\"><b>Remedy:</b> {}</div>",
                isolate(&finding.remedy)
            ))?;
        }
        html.push_str("</div>\n");
    }

    w(writeln!(
        html,
        "<h2 id=\"charts\">Over time</h2>\n<p>{} sample(s) over {}{}. Lines across a chart mark the findings and alerts numbered below.</p>",
        page.data.samples(),
        format_seconds(page.data.span_seconds()),
        if page.data.points().len() < page.data.samples() {
            format!(" (thinned to {} points)", page.data.points().len())
        } else {
            String::new()
        }
    ))?;
    for chart in charts::all(page.data) {
        w(writeln!(
            html,
            "<figure id=\"chart-{}\">\n<h3>{}</h3>",
            chart.id,
            escape(chart.title)
        ))?;
        if chart.svg.is_ok() && !chart.legend.is_empty() {
            html.push_str("<div class=\"legend\">");
            for (name, color) in &chart.legend {
                w(write!(
                    html,
                    "<span class=\"key\"><i style=\"background:#{:02x}{:02x}{:02x}\"></i>{}</span>",
                    color.0,
                    color.1,
                    color.2,
                    escape(name)
                ))?;
            }
            html.push_str("</div>\n");
        }
        match &chart.svg {
            // plotters escapes the text it draws; the labels are tfwatch's own.
            Ok(svg) => html.push_str(svg),
            Err(why) => w(write!(html, "<p class=\"none\">{}</p>", escape(why)))?,
        }
        if !chart.caption.is_empty() {
            w(write!(
                html,
                "\n<figcaption>{}</figcaption>",
                escape(&chart.caption)
            ))?;
        }
        html.push_str("\n</figure>\n");
    }

    html.push_str("<h2 id=\"marks\">On the time axis</h2>\n");
    let marks = page.data.marks();
    if marks.is_empty() {
        html.push_str("<p>No finding or alert was raised.</p>\n");
    } else {
        html.push_str(
            "<table class=\"marks\">\n<tr><th>#</th><th>at</th><th>severity</th><th>what</th><th>summary</th></tr>\n",
        );
        for (index, mark) in marks.iter().enumerate() {
            w(writeln!(
                html,
                "<tr><td style=\"color:{}\"><b>{}</b></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                color_hex(mark.severity),
                index + 1,
                escape(&format!("{:.1} s", mark.elapsed_seconds)),
                badge(mark.severity),
                isolate(&mark.what),
                isolate(&mark.summary)
            ))?;
        }
        html.push_str("</table>\n");
        if page.data.marks_left_out > 0 {
            w(writeln!(
                html,
                "<p>{} later finding(s) and alert(s) are not shown.</p>",
                page.data.marks_left_out
            ))?;
        }
    }

    html.push_str("<h2 id=\"diagnosis\">Diagnosis</h2>\n");
    match &page.diagnosis {
        Some((report, what)) => {
            w(writeln!(html, "<p>{}</p>", escape(what)))?;
            let mut text = Vec::new();
            report::write_text(report, false, &mut text)?;
            w(writeln!(
                html,
                "<pre>{}</pre>",
                isolate(&String::from_utf8_lossy(&text))
            ))?;
        }
        None => html.push_str("<p>No diagnosis was taken (no sample was judged).</p>\n"),
    }

    if !page.notes.is_empty() {
        html.push_str("<h2 id=\"notes\">Notes</h2>\n<ul>\n");
        for note in &page.notes {
            w(writeln!(html, "<li>{}</li>", isolate(note)))?;
        }
        html.push_str("</ul>\n");
    }
    // The one place the whole command line is, when the facts show it cut.
    if let Some((whole, shown)) = &command_cut
        && shown.len() != whole.len()
    {
        w(writeln!(
            html,
            "<h2 id=\"command\">Command line</h2>\n<pre>{}</pre>",
            isolate(whole)
        ))?;
    }
    w(writeln!(
        html,
        "<footer>Written by tfwatch {}; this page loads nothing from outside.</footer>\n</body>\n</html>",
        env!("CARGO_PKG_VERSION")
    ))?;
    Ok(())
}
