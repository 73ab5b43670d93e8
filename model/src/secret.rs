//! Reading a secret (a bearer or ACL token) from a file, the one way the
//! feeder and the module do it: the file must be readable by its owner
//! only, as ssh insists for keys, since anyone who can read the token can
//! read the feed (or the Consul catalog) in the service's name.

use std::fs::File;
use std::io::Read as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

/// The largest secret file read; tokens are a few hundred bytes.
pub const MAX_SECRET: u64 = 64 * 1024;

/// A secret file that cannot be used. The message says how to fix it.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path} is readable by {who} (mode {mode:04o}): a token must be readable by its owner only; \
         run `chmod 600 {path}` (in Kubernetes, set the secret volume's defaultMode to 0400)"
    )]
    Exposed {
        path: PathBuf,
        mode: u32,
        who: &'static str,
    },
    #[error("{path} is larger than {MAX_SECRET} bytes, which no token is")]
    TooLarge { path: PathBuf },
}

/// Reads `path` after checking, on the opened file itself (so a swap of
/// the path in between changes nothing), that no group or other user may
/// read or write it.
pub fn read_secret(path: &Path) -> Result<String, SecretError> {
    let read_err = |source| SecretError::Read {
        path: path.to_owned(),
        source,
    };
    let mut file = File::open(path).map_err(read_err)?;
    let meta = file.metadata().map_err(read_err)?;
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        let who = match (mode & 0o070 != 0, mode & 0o007 != 0) {
            (true, true) => "its group and every user",
            (true, false) => "its group",
            _ => "every user",
        };
        return Err(SecretError::Exposed {
            path: path.to_owned(),
            mode,
            who,
        });
    }
    if meta.len() > MAX_SECRET {
        return Err(SecretError::TooLarge {
            path: path.to_owned(),
        });
    }
    let mut bytes = Vec::new();
    file.by_ref()
        .take(MAX_SECRET + 1)
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    if bytes.len() as u64 > MAX_SECRET {
        return Err(SecretError::TooLarge {
            path: path.to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_mode(dir: &Path, mode: u32) -> PathBuf {
        let path = dir.join(format!("token-{mode:o}"));
        std::fs::write(&path, "s3cret\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    #[test]
    fn only_owner_readable_files_are_read() {
        let dir = tempfile::tempdir().unwrap();
        for mode in [0o600, 0o400] {
            assert_eq!(
                read_secret(&with_mode(dir.path(), mode)).unwrap(),
                "s3cret\n"
            );
        }
        for (mode, who) in [
            (0o644, "its group and every user"),
            (0o640, "its group"),
            (0o604, "every user"),
            (0o620, "its group"),
        ] {
            let path = with_mode(dir.path(), mode);
            let err = read_secret(&path).unwrap_err().to_string();
            assert!(
                err.contains(who)
                    && err.contains(&format!("chmod 600 {}", path.display()))
                    && err.contains(&format!("{mode:04o}")),
                "{err}"
            );
        }
        let missing = read_secret(&dir.path().join("missing")).unwrap_err();
        assert!(missing.to_string().contains("missing"), "{missing}");
    }

    #[test]
    fn a_huge_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big");
        std::fs::write(&path, vec![b'a'; MAX_SECRET as usize + 1]).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(
            read_secret(&path),
            Err(SecretError::TooLarge { .. })
        ));
    }
}
