//! `tfwatch completions` and `tfwatch manpage`: the command line's own documentation,
//! rendered by [`crate::cli::manual`], written out here.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};

use crate::cli::{CompletionsArgs, ManpageArgs};

/// `tfwatch completions SHELL`: the script on stdout.
pub fn completions_command(args: &CompletionsArgs) -> Result<u8> {
    let script = crate::cli::manual::completions(args.shell);
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(&script)?;
    stdout.flush()?;
    Ok(super::exit::OK)
}

/// `tfwatch manpage [--dir DIR]`: tfwatch(1) on stdout, or every page into DIR.
pub fn manpage_command(args: &ManpageArgs) -> Result<u8> {
    let pages = crate::cli::manual::man_pages().context("rendering the man pages")?;
    match &args.dir {
        None => {
            let mut stdout = std::io::stdout().lock();
            if let Some((_, page)) = pages.first() {
                stdout.write_all(page)?;
            }
            stdout.flush()?;
        }
        Some(dir) => write_pages(dir, &pages)?,
    }
    Ok(super::exit::OK)
}

fn write_pages(dir: &Path, pages: &[(String, Vec<u8>)]) -> Result<()> {
    if !dir.is_dir() {
        return Err(super::settings::UsageError(anyhow::anyhow!(
            "--dir {}: not a directory (create it first)",
            dir.display()
        ))
        .into());
    }
    for (name, page) in pages {
        let path = dir.join(name);
        std::fs::write(&path, page).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
