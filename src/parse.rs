//! Parsers of /proc files. They take bytes or `&str`, never a path, and their edge
//! cases are tested next to them.
