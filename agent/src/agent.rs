//! The running agent: loads the config, starts the scheduler, the outputs and the
//! inventory, and handles signals.
//!
//! Shutdown (SIGTERM, SIGINT) is one `CancellationToken`: every loop selects on it; probes
//! in flight are dropped (a command check's process group is killed on the way), the HTTP
//! server finishes the requests it has, and the audit writer drains its queue before the
//! process exits. SIGHUP reloads the config: a rejected file is logged, the previous config
//! keeps running and `telagent_config_last_reload_successful` goes to 0.

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::config::{self, Config, Source};
use crate::engine::bus::Bus;
use crate::engine::model::Model;
use crate::engine::scheduler::Scheduler;

/// How `telagent run` runs (flags, not config).
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Config file; default: /etc/telagent/telagent.toml if present, else the embedded one.
    pub config: Option<PathBuf>,
    /// Overrides `agent.listen`.
    pub listen: Option<SocketAddr>,
}

pub async fn run(opts: RunOptions) -> anyhow::Result<()> {
    let source = config::resolve_source(opts.config.as_deref());
    let config = config::load(&source)?;
    let listen = opts.listen.unwrap_or(config.agent.listen);
    let state_dir = &config.agent.state_dir;
    std::fs::create_dir_all(state_dir).with_context(|| {
        format!(
            "cannot create the state directory {}; create it for the agent's user or set agent.state_dir",
            state_dir.display()
        )
    })?;

    let model = Arc::new(Model::new(&config.agent.server, &source.to_string()));
    let bus = Arc::new(Bus::default());
    let audit = crate::audit::start(
        config.agent.audit_log_path(),
        bus.subscribe(),
        model.clone(),
    )
    .context("cannot start the audit writer thread")?;

    let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| {
        format!("cannot listen on {listen}; is another program using it? Set agent.listen or --listen")
    })?;
    let cancel = CancellationToken::new();
    let api = crate::api::router(Arc::new(crate::api::ApiState {
        model: model.clone(),
        process: crate::metrics::process_registry(),
    }));
    let server = tokio::spawn(
        axum::serve(listener, api)
            .with_graceful_shutdown(cancel.clone().cancelled_owned())
            .into_future(),
    );

    let mut scheduler = Scheduler::new(
        model.clone(),
        bus.clone(),
        &config.agent.server,
        config.agent.max_concurrent_probes,
        cancel.clone(),
    );
    scheduler.apply(&config);
    let (config_tx, config_rx) = watch::channel(config.clone());
    let inventory = tokio::spawn(inventory(model.clone(), config_rx.clone(), cancel.clone()));
    let faxstate = tokio::spawn(crate::routing::faxstate::run(bus.subscribe(), config_rx));
    info!(
        listen = %listen, config = %source, server = %config.agent.server,
        checks = config.checks().len(),
        "telagent started."
    );

    let mut current = config;
    let mut hup = signal(SignalKind::hangup()).context("cannot install the SIGHUP handler")?;
    let mut term = signal(SignalKind::terminate()).context("cannot install the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot install the SIGINT handler")?;
    loop {
        tokio::select! {
            _ = hup.recv() => {
                if let Some(new) = reload(&source, &current, &model) {
                    scheduler.apply(&new);
                    config_tx.send_replace(new.clone());
                    current = new;
                }
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }

    info!("Shutting down.");
    scheduler.shutdown().await;
    let _ = inventory.await;
    match tokio::time::timeout(Duration::from_secs(5), server).await {
        Ok(Ok(Err(e))) => warn!(error = %e, "HTTP server ended with an error."),
        Err(_) => warn!("HTTP server did not finish its requests within 5s."),
        _ => {}
    }
    bus.close();
    let _ = faxstate.await;
    let _ = tokio::task::spawn_blocking(move || audit.join()).await;
    info!("Stopped.");
    Ok(())
}

/// Loads the config again; on success returns it, on failure keeps the old one.
fn reload(source: &Source, current: &Config, model: &Model) -> Option<Config> {
    let result = config::load(source);
    let mut m = model.write();
    m.reload.at = SystemTime::now();
    match result {
        Ok(new) => {
            m.reload.successful = true;
            m.reload.error = None;
            drop(m);
            for (what, changed) in [
                ("agent.listen", new.agent.listen != current.agent.listen),
                (
                    "agent.state_dir",
                    new.agent.state_dir != current.agent.state_dir,
                ),
                ("agent.server", new.agent.server != current.agent.server),
                (
                    "agent.audit_log",
                    new.agent.audit_log != current.agent.audit_log,
                ),
            ] {
                if changed {
                    warn!(
                        key = what,
                        "This key changed; it takes effect at the next restart."
                    );
                }
            }
            info!(config = %source, checks = new.checks().len(), "Configuration reloaded.");
            Some(new)
        }
        Err(e) => {
            m.reload.successful = false;
            m.reload.error = Some(e.to_string());
            drop(m);
            error!(error = %e, "Configuration rejected; the previous configuration keeps running.");
            None
        }
    }
}

/// Refreshes the serial-port inventory of the model.
async fn inventory(
    model: Arc<Model>,
    mut config: watch::Receiver<Config>,
    cancel: CancellationToken,
) {
    loop {
        let c = config.borrow_and_update().ports.clone();
        let ports = if c.scan {
            let lock_dir = c.lock_dir.clone();
            tokio::task::spawn_blocking(move || {
                crate::serial::inventory::scan(
                    std::path::Path::new("/sys/class/tty"),
                    std::path::Path::new("/dev"),
                    &lock_dir,
                )
            })
            .await
            .unwrap_or_default()
        } else {
            Vec::new()
        };
        model.write().ports = ports;
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(c.interval) => {}
            _ = config.changed() => {}
        }
    }
}
