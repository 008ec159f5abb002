//! Pretty JSON as `serde_json::to_writer_pretty` writes it (two spaces a level), with
//! each line break and its indentation written in one piece.
//!
//! serde_json's `PrettyFormatter` writes a line's indentation one level at a time: a
//! thread of a snapshot sits five levels deep, so a 1,000-thread report made some
//! 150,000 two-byte writes for its indentation alone, the largest part of the report's
//! formatting cost. [`IndentFormatter`] takes `",\n"` and the spaces as one slice of a
//! static run.

use std::io::{self, Write};

use serde::Serialize;
use serde_json::ser::Formatter;

/// The indentation of one level.
const INDENT: usize = 2;

/// Levels written in one piece; deeper lines add the rest level by level.
const LEVELS: usize = 32;

/// `",\n"` and the spaces of [`LEVELS`] levels: a line break is a slice of it.
const BREAKS: &[u8; 2 + INDENT * LEVELS] = &{
    let mut run = [b' '; 2 + INDENT * LEVELS];
    run[0] = b',';
    run[1] = b'\n';
    run
};

/// The pretty formatter with one write per line break.
#[derive(Debug, Default)]
pub struct IndentFormatter {
    level: usize,
    has_value: bool,
}

impl IndentFormatter {
    /// A line break (after a comma when `comma`) and the current level's indentation.
    fn line_break<W: ?Sized + Write>(&self, writer: &mut W, comma: bool) -> io::Result<()> {
        let start = usize::from(!comma);
        let levels = self.level.min(LEVELS);
        writer.write_all(&BREAKS[start..2 + INDENT * levels])?;
        for _ in levels..self.level {
            writer.write_all(&BREAKS[2..2 + INDENT])?;
        }
        Ok(())
    }

    /// An array or object opens one level deeper, with no value yet.
    fn open<W: ?Sized + Write>(&mut self, writer: &mut W, bracket: &[u8]) -> io::Result<()> {
        self.level += 1;
        self.has_value = false;
        writer.write_all(bracket)
    }

    /// It closes on a line of its own unless it is empty (`[]`, `{}`).
    fn close<W: ?Sized + Write>(&mut self, writer: &mut W, bracket: &[u8]) -> io::Result<()> {
        self.level -= 1;
        if self.has_value {
            self.line_break(writer, false)?;
        }
        writer.write_all(bracket)
    }
}

impl Formatter for IndentFormatter {
    fn begin_array<W: ?Sized + Write>(&mut self, writer: &mut W) -> io::Result<()> {
        self.open(writer, b"[")
    }

    fn end_array<W: ?Sized + Write>(&mut self, writer: &mut W) -> io::Result<()> {
        self.close(writer, b"]")
    }

    fn begin_array_value<W: ?Sized + Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> io::Result<()> {
        self.line_break(writer, !first)
    }

    fn end_array_value<W: ?Sized + Write>(&mut self, _writer: &mut W) -> io::Result<()> {
        self.has_value = true;
        Ok(())
    }

    fn begin_object<W: ?Sized + Write>(&mut self, writer: &mut W) -> io::Result<()> {
        self.open(writer, b"{")
    }

    fn end_object<W: ?Sized + Write>(&mut self, writer: &mut W) -> io::Result<()> {
        self.close(writer, b"}")
    }

    fn begin_object_key<W: ?Sized + Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> io::Result<()> {
        self.line_break(writer, !first)
    }

    fn begin_object_value<W: ?Sized + Write>(&mut self, writer: &mut W) -> io::Result<()> {
        writer.write_all(b": ")
    }

    fn end_object_value<W: ?Sized + Write>(&mut self, _writer: &mut W) -> io::Result<()> {
        self.has_value = true;
        Ok(())
    }
}

/// Writes `value` as `serde_json::to_writer_pretty` does, byte for byte.
pub fn to_writer_pretty<W: Write, T: ?Sized + Serialize>(
    writer: W,
    value: &T,
) -> serde_json::Result<()> {
    let mut serializer = serde_json::Serializer::with_formatter(writer, IndentFormatter::default());
    value.serialize(&mut serializer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn both(value: &Value) -> (String, String) {
        let mut ours = Vec::new();
        to_writer_pretty(&mut ours, value).unwrap();
        let mut theirs = Vec::new();
        serde_json::to_writer_pretty(&mut theirs, value).unwrap();
        (
            String::from_utf8(ours).unwrap(),
            String::from_utf8(theirs).unwrap(),
        )
    }

    #[test]
    fn writes_what_serde_json_writes() {
        let value = json!({
            "schema": 1,
            "empty_object": {},
            "empty_array": [],
            "processes": [
                {"pid": 7, "threads": [{"tid": 7, "name": "a\"b\n", "wchan": null}]},
                {"pid": 8, "threads": [], "nested": [[1, 2], [], [{}]]}
            ],
            "ratio": 0.25
        });
        let (ours, theirs) = both(&value);
        assert_eq!(ours, theirs);
        assert!(ours.contains("\n      \"threads\": ["), "{ours}");
    }

    #[test]
    fn lines_deeper_than_the_static_run_are_indented_in_full() {
        let mut value = json!("leaf");
        for depth in 0..(LEVELS + 5) {
            value = if depth % 2 == 0 {
                json!([value, depth])
            } else {
                json!({ "level": value, "n": depth })
            };
        }
        let (ours, theirs) = both(&value);
        assert_eq!(ours, theirs);
        let deepest = ours.lines().map(|l| l.len() - l.trim_start().len()).max();
        assert!(deepest > Some(INDENT * LEVELS), "{deepest:?}");
    }
}
