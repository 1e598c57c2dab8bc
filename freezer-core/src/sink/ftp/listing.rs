//! Reading directory listings: `MLSD` facts, or `LIST` lines in the Unix and DOS formats.

use suppaftp::list::ListParser;

/// Reads one line of a listing: `None` for lines that name nothing (`total 12`).
pub(super) fn parse_listing(
    line: &str,
    mlsd: bool,
) -> std::result::Result<Option<(String, bool, u64)>, String> {
    let line = line.trim_end_matches(['\r', '\n']);
    if line.trim().is_empty() || (!mlsd && line.starts_with("total ")) {
        return Ok(None);
    }
    let file = if mlsd {
        // Skip the folder itself and its parent (type=cdir, type=pdir).
        let facts = line
            .split_once(' ')
            .map_or("", |(f, _)| f)
            .to_ascii_lowercase();
        if facts.contains("type=cdir") || facts.contains("type=pdir") {
            return Ok(None);
        }
        ListParser::parse_mlsd(line)
    } else {
        ListParser::parse_posix(line).or_else(|_| ListParser::parse_dos(line))
    }
    .map_err(|e| format!("unreadable listing line ({e})"))?;
    if file.is_symlink() {
        return Ok(None);
    }
    Ok(Some((
        file.name().to_string(),
        file.is_directory(),
        file.size() as u64,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listings_are_read() {
        let vsftpd = "-rw-------    1 1001     1001       100000 Nov 24 04:00 ünïcödé ✓";
        assert_eq!(
            parse_listing(vsftpd, false).unwrap(),
            Some(("ünïcödé ✓".to_string(), false, 100_000))
        );
        let dir = "drwxr-xr-x    2 0        0            4096 Jan 01  2025 data";
        assert_eq!(
            parse_listing(dir, false).unwrap(),
            Some(("data".to_string(), true, 4096))
        );
        assert_eq!(parse_listing("total 12", false).unwrap(), None);
        let link = "lrwxrwxrwx    1 0        0               4 Jan 01  2025 l -> data";
        assert_eq!(parse_listing(link, false).unwrap(), None);
        assert!(parse_listing("garbage", false).is_err());
        let mlsd = "type=file;size=42;modify=20251124040000; a file";
        assert_eq!(
            parse_listing(mlsd, true).unwrap(),
            Some(("a file".to_string(), false, 42))
        );
        assert_eq!(
            parse_listing("type=cdir;modify=20251124040000; /x", true).unwrap(),
            None
        );
        assert_eq!(
            parse_listing("type=dir;modify=20251124040000; sub", true).unwrap(),
            Some(("sub".to_string(), true, 0))
        );
    }
}
