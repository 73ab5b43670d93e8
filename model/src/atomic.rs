//! Atomic replacement of a list file, shared by the feeder's file sink and
//! the module's `list_file_sync`: a temporary file in the same directory,
//! fsync, rename over the target, fsync of the directory, so Kamailio only
//! ever reads a whole file.
//!
//! The temporary file has an unpredictable name and is created with
//! `O_CREAT | O_EXCL | O_NOFOLLOW`: in a directory others can write to
//! (`/tmp`, a shared volume), nobody can make us write through a symlink or
//! into a file they opened beforehand. A writer killed between create and
//! rename leaves its temporary file behind; [`remove_stale`] removes those
//! of a target when its writer starts.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What every temporary file of a target `NAME` is called:
/// `.NAME.dsfeed-XXXXXXXXXXXXXXXX.tmp`, sixteen random hex digits.
const TMP_MARK: &str = ".dsfeed-";
const TMP_END: &str = ".tmp";

/// Replaces `path` with `content`, readable with `mode` (the dispatcher
/// reads the list as Kamailio's user, so callers pass 0o644).
pub fn write_atomically(path: &Path, content: &[u8], mode: u32) -> io::Result<()> {
    replace(path, content, mode, None)
}

/// Like [`write_atomically`], and the new file's modification time is
/// later, in whole seconds, than that of the file it replaces: Kamailio's
/// `db_text` re-reads a table only when its whole-second mtime changed,
/// so a table rewritten within the second of its last read would be
/// missed. The new mtime is now, or one second past the old one when that
/// is not earlier than now.
pub fn write_atomically_later(path: &Path, content: &[u8], mode: u32) -> io::Result<()> {
    let now = SystemTime::now();
    let mtime = match fs::metadata(path).and_then(|m| m.modified()) {
        Ok(old) => {
            let old_secs = old.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
            let now_secs = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
            if now_secs > old_secs {
                now
            } else {
                UNIX_EPOCH + Duration::from_secs(old_secs + 1)
            }
        }
        Err(_) => now,
    };
    replace(path, content, mode, Some(mtime))
}

fn replace(path: &Path, content: &[u8], mode: u32, mtime: Option<SystemTime>) -> io::Result<()> {
    let (dir, name) = split(path)?;
    let tmp = dir.join(tmp_name(&name, rand::random()));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)?;
        file.write_all(content)?;
        // The umask may have taken bits the caller asked for.
        file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(mode))?;
        if let Some(mtime) = mtime {
            file.set_modified(mtime)?;
        }
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        File::open(&dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Removes the temporary files a killed writer of `path` left behind, and
/// returns their paths. Call it before the first write: a target has one
/// writer (the feeder in file mode, or the module with `list_file_sync`,
/// never both), so any such file from before it started is a leftover.
pub fn remove_stale(path: &Path) -> io::Result<Vec<PathBuf>> {
    let (dir, name) = split(path)?;
    let mut prefix = OsString::from(".");
    prefix.push(&name);
    prefix.push(TMP_MARK);
    let prefix = prefix.as_encoded_bytes().to_vec();
    let mut removed = Vec::new();
    let entries = match fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(removed),
        Err(err) => return Err(err),
    };
    for entry in entries {
        let entry = entry?;
        let file_name = entry.file_name();
        let bytes = file_name.as_encoded_bytes();
        let Some(random) = bytes
            .strip_prefix(prefix.as_slice())
            .and_then(|rest| rest.strip_suffix(TMP_END.as_bytes()))
        else {
            continue;
        };
        // Only our own pattern, and only plain files (a symlink is removed
        // as a link, never followed).
        if random.len() == 16
            && random.iter().all(u8::is_ascii_hexdigit)
            && entry.file_type()?.is_file()
        {
            fs::remove_file(entry.path())?;
            removed.push(entry.path());
        }
    }
    Ok(removed)
}

fn split(path: &Path) -> io::Result<(PathBuf, OsString)> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "the path names no file"))?;
    Ok((dir, name.to_owned()))
}

fn tmp_name(name: &std::ffi::OsStr, random: u64) -> OsString {
    let mut tmp = OsString::from(".");
    tmp.push(name);
    tmp.push(format!("{TMP_MARK}{random:016x}{TMP_END}"));
    tmp
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn replaces_the_file_whole_with_its_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dispatcher.list");
        fs::write(&path, "old").unwrap();
        write_atomically(&path, b"new\n", 0o644).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "new\n");
        assert_eq!(path.metadata().unwrap().permissions().mode() & 0o777, 0o644);
        assert_eq!(names(dir.path()), ["dispatcher.list"]);
    }

    #[test]
    fn a_rewrite_is_seconds_later_than_what_it_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rtpengine");
        let secs = |p: &Path| {
            p.metadata()
                .unwrap()
                .modified()
                .unwrap()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_secs()
        };
        write_atomically_later(&path, b"a\n", 0o644).unwrap();
        let first = secs(&path);
        write_atomically_later(&path, b"b\n", 0o644).unwrap();
        write_atomically_later(&path, b"c\n", 0o644).unwrap();
        assert!(
            secs(&path) >= first + 2,
            "every rewrite moves a whole second"
        );
        assert_eq!(fs::read_to_string(&path).unwrap(), "c\n");
        assert_eq!(names(dir.path()), ["rtpengine"]);
    }

    #[test]
    fn temporary_names_are_unpredictable() {
        let a = tmp_name("d.list".as_ref(), rand::random());
        let b = tmp_name("d.list".as_ref(), rand::random());
        assert_ne!(a, b);
        assert!(
            !a.to_string_lossy()
                .contains(&std::process::id().to_string())
        );
    }

    #[test]
    fn a_planted_symlink_is_never_followed() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        fs::write(&victim, "precious").unwrap();
        let path = dir.path().join("dispatcher.list");
        // Whatever name comes next, O_EXCL | O_NOFOLLOW refuse a link there.
        let planted = dir.path().join(tmp_name("dispatcher.list".as_ref(), 7));
        std::os::unix::fs::symlink(&victim, &planted).unwrap();
        let err = OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&planted)
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        write_atomically(&path, b"list\n", 0o644).unwrap();
        assert_eq!(fs::read_to_string(&victim).unwrap(), "precious");
    }

    #[test]
    fn stale_temporary_files_are_removed_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dispatcher.list");
        let stale = dir.path().join(tmp_name("dispatcher.list".as_ref(), 0xabc));
        fs::write(&stale, "half").unwrap();
        let other_target = dir.path().join(tmp_name("other.list".as_ref(), 1));
        fs::write(&other_target, "x").unwrap();
        let victim = dir.path().join("victim");
        fs::write(&victim, "precious").unwrap();
        let link = dir.path().join(tmp_name("dispatcher.list".as_ref(), 2));
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        for kept in [".dispatcher.list.dsfeed-xyz.tmp", "dispatcher.list.bak"] {
            fs::write(dir.path().join(kept), "keep").unwrap();
        }
        let removed = remove_stale(&path).unwrap();
        assert_eq!(removed, [stale]);
        assert_eq!(
            names(dir.path()),
            [
                ".dispatcher.list.dsfeed-0000000000000002.tmp",
                ".dispatcher.list.dsfeed-xyz.tmp",
                ".other.list.dsfeed-0000000000000001.tmp",
                "dispatcher.list.bak",
                "victim"
            ]
        );
        assert!(
            remove_stale(&dir.path().join("missing/d.list"))
                .unwrap()
                .is_empty()
        );
    }
}
