//! The `dsfeed` binary: wiring only. Each piece lives in the library.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use dsfeed::config::{Command, Config};
use dsfeed::feed::server::Server;
use dsfeed::sinks::file::ListWriter;
use dsfeed::snapshot::Snapshot;
use dsfeed::sources::{Source, sets_file::SetsFileSource, static_sets::StaticSource};
use tokio::sync::watch;

fn main() -> ExitCode {
    let config = Config::load();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let result = runtime.block_on(async {
        match &config.command {
            Some(Command::Watch(args)) => dsfeed::feed::watch::run(args, &mut std::io::stdout())
                .await
                .map_err(Into::into),
            None if config.once => once(&config).await,
            None => daemon(&config).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("dsfeed: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn sources(config: &Config) -> Vec<Box<dyn Source>> {
    let mut sources: Vec<Box<dyn Source>> = Vec::new();
    if !config.statics.is_empty() {
        sources.push(Box::new(StaticSource::new(&config.statics)));
    }
    if let Some(path) = &config.sets_file {
        sources.push(Box::new(SetsFileSource::new(path.clone())));
    }
    sources
}

/// Builds the first snapshot from every source, delivers it and returns.
async fn once(config: &Config) -> anyhow::Result<()> {
    let (tx, mut rx) = watch::channel(None);
    let hub = tokio::spawn(dsfeed::hub::run(sources(config), tx));
    let snapshot: Arc<Snapshot> = tokio::select! {
        synced = rx.wait_for(Option::is_some) => synced
            .context("the sources stopped before syncing")?
            .clone()
            .expect("waited for Some"),
        failed = hub => {
            failed.context("the hub panicked")??;
            anyhow::bail!("the sources stopped before syncing");
        }
    };
    if config.writes_stdout() {
        print!("{}", snapshot.to_dispatcher_list());
    } else {
        ListWriter::new(config.output.clone()).write(&snapshot)?;
    }
    Ok(())
}

/// Runs every source and sink until a fatal error or a shutdown signal.
async fn daemon(config: &Config) -> anyhow::Result<()> {
    let server = Server::bind(&config.serve).await?;
    let (tx, mut rx) = watch::channel(None);
    let feed = server.run(rx.clone(), terminated());
    let hub = tokio::spawn(dsfeed::hub::run(sources(config), tx));
    let writer = ListWriter::new(config.output.clone());
    let writes_file = config.writes_file();
    let sink = async move {
        if !writes_file {
            return std::future::pending().await;
        }
        while rx.changed().await.is_ok() {
            let Some(snapshot) = rx.borrow_and_update().clone() else {
                continue;
            };
            if let Err(err) = writer.write(&snapshot) {
                tracing::error!(error = %err, "write failed");
            }
        }
    };
    tokio::select! {
        () = sink => Ok(()),
        failed = hub => failed.context("the hub panicked")?.map_err(Into::into),
        served = feed => served.map_err(Into::into),
    }
}

/// Resolves on SIGTERM or SIGINT.
async fn terminated() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("a SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("a SIGINT handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = int.recv() => tracing::info!("SIGINT: shutting down"),
    }
}
