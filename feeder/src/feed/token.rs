//! The feed's bearer token, read from `--token-file` and read again when the
//! file changes, so a rotated token (a Kubernetes Secret update swaps the
//! file under its mount) takes effect on the next stream without a restart,
//! as it does in dsfeed.so, which reads its token at every connect.

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::error::Error;

/// What identifies one version of the file: a rename over it, a write into
/// it or a chmod changes at least one of these.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    fn of(path: &Path) -> std::io::Result<Stamp> {
        let m = std::fs::metadata(path)?;
        Ok(Stamp {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        })
    }
}

/// The file's stamp when last read, and what reading it gave.
type Cached = (Option<Stamp>, Result<Arc<str>, String>);

/// A token file and the token it held when last read.
#[derive(Debug)]
pub struct TokenFile {
    path: PathBuf,
    cached: Mutex<Cached>,
}

impl TokenFile {
    /// Reads `path` now, so that a missing, empty or exposed (group- or
    /// world-readable) file stops the feeder at start, naming the fix.
    pub fn open(path: &Path) -> Result<TokenFile, Error> {
        let stamp = Stamp::of(path).ok();
        let token = read_token(path)?;
        Ok(TokenFile {
            path: path.to_owned(),
            cached: Mutex::new((stamp, Ok(token.into()))),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The token now: read again if the file changed since the last look.
    /// A file that became unusable refuses every new stream until it is
    /// fixed (the error says why); keeping the old token would keep a
    /// revoked one working.
    pub fn current(&self) -> Result<Arc<str>, String> {
        let stamp = Stamp::of(&self.path).ok();
        let mut cached = self.cached.lock().expect("not poisoned");
        if stamp.is_none() || cached.0 != stamp {
            let token = read_token(&self.path).map(Arc::from).map_err(|err| {
                let text = dsfeed_model::error_chain(&err);
                tracing::error!(error = %text, "the token file cannot be used: new streams are refused until it is fixed");
                text
            });
            if let (Ok(_), Some(_)) = (&token, &stamp)
                && cached.0.is_some()
            {
                tracing::info!(path = %self.path.display(), "token file changed: new streams need the new token");
            }
            *cached = (stamp, token);
        }
        cached.1.clone()
    }
}

/// The bearer token in `path`, without surrounding whitespace: the file
/// must be readable by its owner only, and hold visible ASCII.
pub fn read_token(path: &Path) -> Result<String, Error> {
    let text = dsfeed_model::secret::read_secret(path).map_err(|source| Error::Secret {
        path: path.to_owned(),
        source,
    })?;
    let token = text.trim().to_owned();
    if token.is_empty() {
        return Err(Error::EmptyToken {
            path: path.to_owned(),
        });
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Error::BadToken {
            path: path.to_owned(),
        });
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    fn write(path: &Path, text: &str, mode: u32) {
        let tmp = path.with_extension("new");
        std::fs::write(&tmp, text).unwrap();
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode)).unwrap();
        std::fs::rename(&tmp, path).unwrap();
    }

    /// A token file holding `text` at `mode`, in a fresh directory
    /// (returned first: keep it as long as the file).
    fn token_file(text: &str, mode: u32) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        write(&path, text, mode);
        (dir, path)
    }

    #[test]
    fn a_rotated_token_is_read_again_and_a_broken_one_refuses() {
        let (_dir, path) = token_file("first\n", 0o600);
        let file = TokenFile::open(&path).unwrap();
        assert_eq!(&*file.current().unwrap(), "first");
        write(&path, "second", 0o600);
        assert_eq!(&*file.current().unwrap(), "second");
        write(&path, "third", 0o644);
        let err = file.current().unwrap_err();
        assert!(err.contains("chmod 600"), "{err}");
        write(&path, "", 0o600);
        assert!(file.current().unwrap_err().contains("empty"));
        std::fs::remove_file(&path).unwrap();
        assert!(file.current().is_err());
        write(&path, "fourth", 0o400);
        assert_eq!(&*file.current().unwrap(), "fourth");
    }

    #[test]
    fn an_exposed_or_odd_token_file_is_refused_at_start() {
        let (_dir, path) = token_file("s3cret", 0o640);
        let err = TokenFile::open(&path).unwrap_err();
        let text = dsfeed_model::error_chain(&err);
        assert!(
            text.contains("its group") && text.contains("chmod 600"),
            "{text}"
        );
        write(&path, "has space", 0o600);
        assert!(TokenFile::open(&path).is_err());
    }
}
