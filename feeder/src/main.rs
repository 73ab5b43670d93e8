//! The `dsfeed` binary: wiring only. Each piece lives in the library.

use std::io::{IsTerminal as _, Write as _};
use std::process::ExitCode;

use anyhow::Context as _;
use dsfeed::config::{Check, Command, Config, Mode};
use dsfeed::feed::Shared;
use dsfeed::feed::server::Server;
use dsfeed::http::{Http, StatusGate};
use dsfeed::hub::Hub;
use dsfeed::metrics::Metrics;
use dsfeed::sinks::feed::FeedSink;
use dsfeed::sinks::file::{self, Applier, FileSink, ListWriter, WhenModule};
use dsfeed::sinks::table::{TableSink, TableWriter};
use dsfeed::sources::kubernetes::{Connection, KubernetesSource};
use dsfeed::sources::{
    Source, consul, dns_srv, sets_file::SetsFileSource, static_sets::StaticSource,
};
use dsfeed_binrpc as binrpc;
use dsfeed_model::ListKind;

fn main() -> ExitCode {
    let config = Config::load();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        // A closed stderr (`dsfeed ... 2>&1 | head`) loses log lines; its
        // complaint would be a panic on a runtime worker.
        .log_internal_errors(false)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            say(format_args!("cannot start the async runtime: {err}"));
            return ExitCode::FAILURE;
        }
    };
    if config.legacy_endpoints {
        tracing::warn!(
            "-legacy-endpoints is accepted for CyCoreSystems/dispatchers' command lines and ignored: dsfeed reads EndpointSlices (discovery.k8s.io/v1), so its ServiceAccount needs get, list and watch on endpointslices, not endpoints"
        );
    }
    if let (None, Some(what)) = (&config.command, config.check) {
        return runtime.block_on(check(&config, what));
    }
    let result = runtime.block_on(async {
        match &config.command {
            Some(Command::Watch(args)) => dsfeed::feed::watch::run(args, &mut std::io::stdout())
                .await
                .map_err(Into::into),
            Some(Command::Healthcheck(args)) => dsfeed::healthcheck::check(args.http)
                .await
                .map_err(anyhow::Error::msg)
                .and_then(|status| {
                    to_stdout(&format!("{status}\n")).context("cannot write the answer")
                }),
            None if config.once => once(&config).await,
            None => daemon(&config).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            say(format_args!("{err:#}"));
            ExitCode::FAILURE
        }
    }
}

/// Tells the operator on standard error, as `dsfeed: ...`. A closed
/// stderr (`dsfeed ... 2>&1 | head`) loses the line but must not turn the
/// exit status into a panic's.
fn say(line: std::fmt::Arguments) {
    let _ = writeln!(std::io::stderr(), "dsfeed: {line}");
}

/// Writes `text` to standard output. A reader that stopped early
/// (`dsfeed --once -o - | head`) wanted no more: that is no error.
fn to_stdout(text: &str) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(err) if err.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        result => result,
    }
}

/// `--check`: the summary and 0, or every problem and 2, the status of a
/// bad flag.
async fn check(config: &Config, what: Check) -> ExitCode {
    let problems = dsfeed::check::problems(config, what).await;
    if problems.is_empty() {
        let summary = dsfeed::check::summary(config);
        return match to_stdout(&format!("{summary}\nconfiguration OK\n")) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                say(format_args!("cannot write the summary: {err}"));
                ExitCode::FAILURE
            }
        };
    }
    for problem in &problems {
        say(format_args!("{problem}"));
    }
    let plural = if problems.len() == 1 { "" } else { "s" };
    say(format_args!(
        "configuration not usable ({} problem{plural})",
        problems.len()
    ));
    ExitCode::from(2)
}

fn sources(config: &Config) -> anyhow::Result<Vec<Box<dyn Source>>> {
    let mut sources: Vec<Box<dyn Source>> = Vec::new();
    if !(config.statics.is_empty()
        && config.static_rtpengine.is_empty()
        && config.static_domains.is_empty())
    {
        sources.push(Box::new(
            StaticSource::new(&config.statics)
                .with_lists(&config.static_rtpengine, &config.static_domains),
        ));
    }
    if let Some(path) = &config.sets_file {
        sources.push(Box::new(SetsFileSource::new(path.clone())));
    }
    let connection = config
        .kubecfg
        .clone()
        .map_or(Connection::Infer, Connection::Kubeconfig);
    if !config.services.is_empty() {
        sources.push(Box::new(KubernetesSource::new(
            &config.services,
            &config.namespace,
            connection.clone(),
            config.min_endpoints,
        )));
    }
    if !config.rtpengine_services.is_empty() {
        let sets: Vec<_> = config
            .rtpengine_services
            .iter()
            .map(|s| s.0.clone())
            .collect();
        sources.push(Box::new(
            KubernetesSource::new(
                &sets,
                &config.namespace,
                connection.clone(),
                config.min_endpoints,
            )
            .rtpengine(),
        ));
    }
    for set in &config.domain_services {
        sources.push(Box::new(
            KubernetesSource::new(
                std::slice::from_ref(&set.service),
                &config.namespace,
                connection.clone(),
                config.min_endpoints,
            )
            .domains(set.did.clone()),
        ));
    }
    sources.extend(consul::sources(&config.consul).context("Consul")?);
    sources.extend(dns_srv::sources(&config.dns).context("DNS SRV")?);
    Ok(sources)
}

/// The `--rtpengine-table` and `--domain-table` writers.
fn table_writers(config: &Config) -> Vec<TableWriter> {
    [
        (ListKind::Rtpengine, &config.rtpengine_table),
        (ListKind::Domain, &config.domain_table),
    ]
    .into_iter()
    .filter_map(|(kind, path)| Some(TableWriter::new(kind, path.clone()?)))
    .collect()
}

/// Builds the first snapshot from every source, delivers it and returns.
async fn once(config: &Config) -> anyhow::Result<()> {
    let snapshot = Hub::new(&Metrics::new())
        .with_sources(sources(config)?)
        .first_snapshot(config.once_timeout)
        .await?;
    for writer in table_writers(config) {
        writer.remove_stale();
        writer.write(&snapshot)?;
        if let Some(addr) = config.reload_addr() {
            let client = binrpc::Client::new(addr.clone());
            let module = writer.module();
            binrpc::lists::reload(&client, module)
                .await
                .with_context(|| {
                    format!(
                        "Kamailio at {addr} did not reload {} ({})",
                        writer.path().display(),
                        module.reload_method()
                    )
                })?;
        }
    }
    if !config.feeds_dispatcher() {
        return Ok(());
    }
    if config.writes_stdout() {
        to_stdout(&snapshot.to_dispatcher_list()).context("cannot write the list to stdout")?;
    } else {
        let writer = ListWriter::new(config.output.clone());
        writer.remove_stale();
        writer.write(&snapshot)?;
    }
    if let Some(addr) = config.reload_addr() {
        let client = binrpc::Client::new(addr.clone());
        match file::applier(&client).await {
            Applier::Dispatcher => binrpc::dispatcher::reload(&client)
                .await
                .with_context(|| format!("Kamailio at {addr} did not reload dispatcher.list"))?,
            Applier::Module if config.mode != Mode::File => tracing::info!(
                rpc = %addr,
                "Kamailio runs dsfeed.so: it applies the feed, so no dispatcher.reload is sent"
            ),
            Applier::Module => anyhow::bail!(
                "Kamailio at {addr} runs dsfeed.so, the dispatcher's only writer: --mode file does not reload it (two loads at once corrupt its shared memory)"
            ),
            Applier::Unknown => anyhow::bail!(
                "Kamailio at {addr} does not answer on ctl, so dispatcher.list was written but not reloaded"
            ),
        }
    }
    Ok(())
}

/// Runs every source and sink until a fatal error or a shutdown signal:
/// sources → hub → the feed, the file sink and the HTTP endpoints.
async fn daemon(config: &Config) -> anyhow::Result<()> {
    let server = Server::bind(&config.serve).await?;
    let http = match config.serve.http {
        Some(addr) => Some(Http::bind(addr).await?),
        None => None,
    };
    let metrics = Metrics::new();
    let mut hub = Hub::new(&metrics).with_sources(sources(config)?);
    let shared = Shared::new(hub.snapshots(), metrics.clone());
    if let Some(http) = http {
        let gate = StatusGate::new(config.serve.status_access(), server.token());
        hub = hub.with_sink(http.sink(shared.clone(), gate));
    }
    hub = hub.with_sink(FeedSink::new(server, shared));
    if config.writes_file() && config.feeds_dispatcher() {
        let reload = config.reload_addr().map(binrpc::Client::new);
        if reload.is_none() {
            tracing::info!(
                "--no-reload: dispatcher.list is written, Kamailio is not asked to reload it"
            );
        }
        let when_module = match config.mode {
            Mode::File => WhenModule::Refuse,
            Mode::Auto | Mode::Grpc => WhenModule::StepAside,
        };
        hub = hub.with_sink(
            FileSink::new(ListWriter::new(config.output.clone()), reload, &metrics)
                .when_module(when_module)
                .min_reload_interval(config.min_reload_interval),
        );
    }
    // The one-writer rule is the dispatcher's: these modules' reloads go
    // to a Kamailio that runs dsfeed.so too.
    for writer in table_writers(config) {
        hub = hub.with_sink(
            TableSink::new(
                writer,
                config.reload_addr().map(binrpc::Client::new),
                &metrics,
            )
            .min_reload_interval(config.min_reload_interval),
        );
    }
    let registration = consul::Registration::new(&config.consul, config.reload_addr())
        .context("Consul registration")?;
    if let Some(registration) = &registration {
        tokio::spawn(registration.clone().run());
    }
    // The signal handler's own failure is the error, once the hub stopped.
    let (failed_tx, failed_rx) = tokio::sync::oneshot::channel::<std::io::Error>();
    let result = hub
        .run(async move {
            if let Err(err) = shutdown().await {
                let _ = failed_tx.send(err);
            }
        })
        .await
        .map_err(anyhow::Error::from);
    if let Some(registration) = registration {
        registration.deregister().await;
    }
    match failed_rx.await {
        Ok(err) => Err(anyhow::Error::from(err).context("cannot listen for signals")),
        Err(_) => result,
    }
}

/// Resolves on SIGTERM (Kubernetes, systemd) or SIGINT (Ctrl-C).
async fn shutdown() -> std::io::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        interrupted = tokio::signal::ctrl_c() => {
            interrupted?;
            tracing::info!("SIGINT: shutting down");
        }
    }
    Ok(())
}
