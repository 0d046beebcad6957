//! Reading the auditor's inputs without trusting them: only regular files (no symbolic links,
//! devices, pipes or folders), and no more bytes than a limit, checked on the file's size
//! before reading and enforced while reading (a file that grows meanwhile is refused too).

use std::io::Read;
use std::path::Path;

/// Largest small input: a vkey, a certificate, a kept checkpoint, a proof (1 MiB).
pub const MAX_SMALL_FILE: u64 = 1 << 20;
/// Largest archive entry file (2 GiB: 100,000 lines of the largest entries).
pub const MAX_ENTRY_FILE: u64 = 2 << 30;

/// Reads `path` if it is a regular file (not a symbolic link: inside an archive every file
/// must be the archive's own) of at most `max` bytes.
pub fn read_bounded(path: &Path, max: u64) -> Result<Vec<u8>, String> {
    read_checked(path, max, false)
}

/// [`read_bounded`] for a file the auditor named on the command line: a symbolic link to a
/// regular file is followed (the auditor's own choice).
pub fn read_named(path: &Path, max: u64) -> Result<Vec<u8>, String> {
    read_checked(path, max, true)
}

fn read_checked(path: &Path, max: u64, follow: bool) -> Result<Vec<u8>, String> {
    let meta = if follow {
        std::fs::metadata(path)
    } else {
        std::fs::symlink_metadata(path)
    }
    .map_err(|e| format!("{}: {e}", path.display()))?;
    if !meta.file_type().is_file() {
        return Err(format!("{} is not a regular file", path.display()));
    }
    if meta.len() > max {
        return Err(format!(
            "{} is {} bytes, more than the {max} allowed",
            path.display(),
            meta.len()
        ));
    }
    let f = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut out = Vec::with_capacity(meta.len() as usize);
    f.take(max + 1)
        .read_to_end(&mut out)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if out.len() as u64 > max {
        return Err(format!(
            "{} grew past the {max} bytes allowed",
            path.display()
        ));
    }
    Ok(out)
}

/// [`read_bounded`] as UTF-8 text.
pub fn read_text(path: &Path, max: u64) -> Result<String, String> {
    String::from_utf8(read_bounded(path, max)?)
        .map_err(|_| format!("{} is not UTF-8 text", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_regular_files_within_the_limit() {
        let dir = std::env::temp_dir().join(format!("ledger-verify-files-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("a");
        std::fs::write(&f, b"12345").unwrap();
        assert_eq!(read_bounded(&f, 5).unwrap(), b"12345");
        assert!(read_bounded(&f, 4).unwrap_err().contains("more than"));
        assert!(read_bounded(&dir, 100)
            .unwrap_err()
            .contains("not a regular file"));
        #[cfg(unix)]
        {
            let link = dir.join("link");
            std::os::unix::fs::symlink(&f, &link).unwrap();
            assert!(read_bounded(&link, 100)
                .unwrap_err()
                .contains("not a regular file"));
            assert!(read_bounded(Path::new("/dev/zero"), 100).is_err());
        }
        assert!(read_bounded(&dir.join("missing"), 100).is_err());
        std::fs::write(&f, [0xff, 0xfe]).unwrap();
        assert!(read_text(&f, 100).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
