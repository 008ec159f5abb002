//! Parsing and printing of durations, sizes and rates for people.

use std::time::Duration;

/// Parses a duration such as `500ms`, `1s`, `2m`, `1h30m` or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err("empty duration: expected e.g. 500ms, 1s, 2m".to_string());
    }
    if let Ok(seconds) = trimmed.parse::<f64>() {
        if seconds.is_finite() && seconds >= 0.0 {
            return Duration::try_from_secs_f64(seconds).map_err(|_| {
                format!(
                    "duration {text:?} is too long: at most {} seconds",
                    Duration::MAX.as_secs()
                )
            });
        }
        return Err(format!(
            "duration {text:?} must be a non-negative number of seconds"
        ));
    }
    humantime::parse_duration(trimmed)
        .map_err(|e| format!("invalid duration {text:?}: {e} (expected e.g. 500ms, 1s, 2m)"))
}

/// Parses a size such as `512MiB`, `2G`, `1.5GiB` or a bare number of bytes.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("invalid size {text:?}: expected e.g. 512MiB, 2G or 1048576"))?;
    let multiplier: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" | "kib" => 1024.0,
        "m" | "mb" | "mib" => 1024.0 * 1024.0,
        "g" | "gb" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "t" | "tb" | "tib" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        other => {
            return Err(format!(
                "invalid size {text:?}: unknown unit {other:?} (use B, KiB, MiB, GiB or TiB)"
            ));
        }
    };
    let bytes = value * multiplier;
    // 2^64: the first value a u64 cannot hold (a cast would saturate).
    if !bytes.is_finite() || bytes >= 18_446_744_073_709_551_616.0 {
        return Err(format!(
            "invalid size {text:?}: too large (at most 16 EiB, e.g. 512MiB or 2G)"
        ));
    }
    Ok(bytes as u64)
}

/// `1536` → `1.5 KiB`.
pub fn format_bytes(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Seconds for people: `0.004` → `4.0ms`, `75` → `1m15s`.
pub fn format_seconds(seconds: f64) -> String {
    if !seconds.is_finite() {
        return "?".to_string();
    }
    if seconds < 0.0 {
        return format!("-{}", format_seconds(-seconds));
    }
    // Beyond a million hours the hours would not fit the casts below: plain seconds.
    if seconds >= 3.6e9 {
        return format!("{}s", format_number(seconds));
    }
    if seconds < 1.0 {
        format!("{:.1}ms", seconds * 1000.0)
    } else if seconds < 60.0 {
        format!("{seconds:.2}s")
    } else if seconds < 3600.0 {
        format!(
            "{}m{:02}s",
            (seconds / 60.0) as u64,
            (seconds % 60.0) as u64
        )
    } else {
        format!(
            "{}h{:02}m",
            (seconds / 3600.0) as u64,
            ((seconds % 3600.0) / 60.0) as u64
        )
    }
}

/// `50` → `50`, `2.345` → `2.35`, `0.0012` → `0.0012`; from 1e15 up and below 1e-6, three
/// significant digits with an exponent: `1e308`, `1.23e20`, `-4.5e-9`.
pub fn format_number(value: f64) -> String {
    if !value.is_finite() {
        return value.to_string();
    }
    if value == 0.0 {
        return "0".to_string();
    }
    let magnitude = value.abs();
    if !(1e-6..1e15).contains(&magnitude) {
        let text = format!("{value:.2e}");
        let (mantissa, exponent) = text.split_once('e').unwrap_or((text.as_str(), "0"));
        let mantissa = if mantissa.contains('.') {
            mantissa.trim_end_matches('0').trim_end_matches('.')
        } else {
            mantissa
        };
        return format!("{mantissa}e{exponent}");
    }
    if value.fract() == 0.0 {
        return format!("{value:.0}");
    }
    let decimals = if value.abs() >= 1.0 {
        2
    } else {
        // Two significant digits below 1.
        (-value.abs().log10()).floor() as usize + 2
    };
    let text = format!("{value:.decimals$}");
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// Whether `c` is a Unicode bidirectional or format control that reorders or hides the
/// text around it: the embeddings and overrides U+202A–U+202E, the isolates
/// U+2066–U+2069, the marks U+200E, U+200F and U+061C. `gnp.exe` after U+202E shows
/// as `exe.png`, and the words printed after it turn around.
pub fn is_bidi_control(c: char) -> bool {
    matches!(
        c,
        '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{200e}' | '\u{200f}' | '\u{061c}'
    )
}

/// Text read from a watched process (thread names, `comm`, command lines), made safe to
/// print on a terminal: every control character (C0 such as ESC, BEL and CR, DEL, and the
/// C1 controls U+0080–U+009F) becomes a visible escape (`\x1b`, `\u{9b}`), so a process
/// cannot set the terminal's title or clear its screen through tfwatch's output; so does
/// every bidirectional control ([`is_bidi_control`]: `\u{202e}`), so it cannot reverse
/// what is printed. With `keep_lines`, newlines and tabs stay (for a whole rendered
/// report).
pub fn escape_controls(text: &str, keep_lines: bool) -> std::borrow::Cow<'_, str> {
    let unsafe_char = |c: char| {
        (c.is_control() && !(keep_lines && matches!(c, '\n' | '\t'))) || is_bidi_control(c)
    };
    if !text.chars().any(unsafe_char) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut escaped = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if !unsafe_char(c) {
            escaped.push(c);
        } else if u32::from(c) < 0x80 {
            escaped.push_str(&format!("\\x{:02x}", u32::from(c)));
        } else {
            escaped.push_str(&format!("\\u{{{:x}}}", u32::from(c)));
        }
    }
    std::borrow::Cow::Owned(escaped)
}

/// Renders text with `render` into memory, then writes it to `out` with the control
/// characters escaped ([`escape_controls`], lines kept): one gate for a whole text output.
pub fn write_escaped(
    out: &mut impl std::io::Write,
    render: impl FnOnce(&mut Vec<u8>) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let mut buffer = Vec::new();
    render(&mut buffer)?;
    let text = String::from_utf8_lossy(&buffer);
    out.write_all(escape_controls(&text, true).as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1m 30s"), Ok(Duration::from_secs(90)));
        assert!(parse_duration("-1").is_err());
        assert!(parse_duration("fast").unwrap_err().contains("\"fast\""));
        assert!(parse_duration("").is_err());
        // Too large for a Duration: an error, not a panic.
        assert!(parse_duration("1e20").unwrap_err().contains("too long"));
        assert!(parse_duration("1e300").is_err());
        assert_eq!(
            parse_duration("1e9"),
            Ok(Duration::from_secs(1_000_000_000))
        );
    }

    #[test]
    fn parsed_sizes() {
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("2G"), Ok(2 << 30));
        assert_eq!(parse_size("1024"), Ok(1024));
        assert!(parse_size("12 parsecs").unwrap_err().contains("parsecs"));
        assert!(parse_size("MiB").is_err());
        // Beyond a u64: refused instead of saturating.
        assert!(parse_size("16777216TiB").unwrap_err().contains("too large"));
        assert!(parse_size(&"9".repeat(400)).is_err());
        assert_eq!(parse_size("1048575TiB"), Ok(1_048_575 << 40));
    }

    #[test]
    fn sizes_and_times() {
        assert_eq!(format_bytes(512), "512 B");
        assert_eq!(format_bytes(1536), "1.5 KiB");
        assert_eq!(format_seconds(0.004), "4.0ms");
        assert_eq!(format_seconds(75.0), "1m15s");
        assert_eq!(format_seconds(7200.0), "2h00m");
        // Huge and negative values stay short and true.
        assert_eq!(format_seconds(1e308), "1e308s");
        assert_eq!(format_seconds(-75.0), "-1m15s");
        assert_eq!(format_seconds(-1e308), "-1e308s");
    }

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(escape_controls("plain name", false), "plain name");
        assert_eq!(
            escape_controls("\x1b]0;pwn\x07\r", false),
            "\\x1b]0;pwn\\x07\\x0d"
        );
        assert_eq!(escape_controls("a\u{9b}2J\u{7f}", false), "a\\u{9b}2J\\x7f");
        assert_eq!(escape_controls("a\nb\tc", false), "a\\x0ab\\x09c");
        assert_eq!(escape_controls("a\nb\tc\x1b", true), "a\nb\tc\\x1b");
        assert_eq!(escape_controls("zürich ×3", false), "zürich ×3");
        // Bidirectional controls: every one of them, escaped; right-to-left letters stay.
        assert_eq!(
            escape_controls("\u{202e}gnp.exe", false),
            "\\u{202e}gnp.exe"
        );
        for c in ('\u{202a}'..='\u{202e}')
            .chain('\u{2066}'..='\u{2069}')
            .chain(['\u{200e}', '\u{200f}', '\u{061c}'])
        {
            let text = format!("a{c}b");
            assert_eq!(
                escape_controls(&text, true),
                format!("a\\u{{{:x}}}b", u32::from(c))
            );
        }
        assert_eq!(escape_controls("שלום", false), "שלום");
        assert_eq!(escape_controls("a\u{200d}b", false), "a\u{200d}b");
        let mut out = Vec::new();
        write_escaped(&mut out, |b| b.write_all(b"x\x1b[2J\n")).unwrap();
        assert_eq!(out, b"x\\x1b[2J\n");
    }
}
