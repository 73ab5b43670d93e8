//! A unix-socket proxy in front of Kamailio's ctl socket that can swallow
//! Kamailio's replies, for fault injection: the feeder's requests still
//! reach Kamailio, its answers never come back.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{UnixListener, UnixStream};
use tokio::task::JoinHandle;

/// Listens on a path of its own and forwards every connection to
/// `upstream`, connecting anew each time (so a restarted Kamailio on the
/// same path is reached).
pub struct CtlProxy {
    path: PathBuf,
    drop_replies: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

impl CtlProxy {
    /// Starts listening on `path`, forwarding to `upstream`.
    pub fn start(path: &Path, upstream: &Path) -> CtlProxy {
        let listener = UnixListener::bind(path).expect("the proxy's socket binds");
        let drop_replies = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn({
            let (upstream, drop_replies) = (upstream.to_owned(), drop_replies.clone());
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    tokio::spawn(forward(client, upstream.clone(), drop_replies.clone()));
                }
            }
        });
        CtlProxy {
            path: path.to_owned(),
            drop_replies,
            task,
        }
    }

    /// `unix:PATH`, for `--rpc`.
    pub fn addr(&self) -> String {
        format!("unix:{}", self.path.display())
    }

    /// From now on, swallow (`true`) or pass (`false`) Kamailio's replies.
    pub fn drop_replies(&self, drop: bool) {
        self.drop_replies.store(drop, Ordering::SeqCst);
    }
}

async fn forward(client: UnixStream, upstream: PathBuf, drop_replies: Arc<AtomicBool>) {
    let Ok(server) = UnixStream::connect(&upstream).await else {
        return;
    };
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let requests = async move {
        let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
    };
    let replies = async move {
        let mut buf = vec![0; 64 * 1024];
        loop {
            match server_read.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) if drop_replies.load(Ordering::SeqCst) => {}
                Ok(n) => {
                    if client_write.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            }
        }
    };
    tokio::join!(requests, replies);
}

impl Drop for CtlProxy {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}
