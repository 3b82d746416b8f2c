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

use crate::access::Access;
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
    /// Overrides `agent.state_dir`.
    pub state_dir: Option<PathBuf>,
    /// Use the embedded default even if the system file exists.
    pub embedded: bool,
}

pub async fn run(opts: RunOptions) -> anyhow::Result<()> {
    let source = if opts.embedded {
        Source::Embedded
    } else {
        config::resolve_source(opts.config.as_deref())
    };
    let mut base = config::load(&source)?;
    if let Some(dir) = &opts.state_dir {
        base.agent.state_dir = dir.clone();
    }
    let mut found = None;
    let config = discover(&base, &mut found).await;
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
    let recent = Arc::new(crate::audit::Recent::load(&config.agent.audit_log_path()));
    let audit = crate::audit::start(
        config.agent.audit_log_path(),
        bus.subscribe(),
        model.clone(),
        recent.clone(),
    )
    .context("cannot start the audit writer thread")?;

    let access = Access::load(&config.access).map_err(|e| anyhow::anyhow!("{source}: {e}"))?;
    let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| {
        format!("cannot listen on {listen}; is another program using it? Set agent.listen or --listen")
    })?;
    let haproxy = match &config.haproxy {
        Some(h) => Some(
            tokio::net::TcpListener::bind(h.listen)
                .await
                .with_context(|| {
                    format!(
                        "cannot listen on {} for HAProxy's agent-check; set haproxy.listen",
                        h.listen
                    )
                })?,
        ),
        None => None,
    };
    let cancel = CancellationToken::new();
    let traffic = Arc::new(
        crate::traffic::Traffic::open(&config, model.clone())
            .context("cannot open the traffic store; check agent.state_dir")?,
    );
    let traffic_tasks = traffic.start(&config.traffic, cancel.clone());
    let api_state = Arc::new(crate::api::ApiState {
        model: model.clone(),
        process: crate::metrics::process_registry(),
        access: std::sync::RwLock::new(access),
        traffic,
        recent,
    });
    let api = crate::api::router(api_state.clone());
    let server = tokio::spawn(
        axum::serve(
            listener,
            api.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(cancel.clone().cancelled_owned())
        .into_future(),
    );

    let (snap_tx, snap_rx) = watch::channel(Arc::new(crate::routing::Snapshot {
        me: config.agent.server.clone(),
        learned: false,
        config_hash: String::new(),
        servers: Vec::new(),
        routes: Vec::new(),
    }));
    // Subscribed before the first probe, so no transition is missed.
    let notifier = crate::notify::Notifier::open(
        &config.notify,
        &config.agent.state_dir,
        &config.agent.server,
        model.clone(),
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?
    .map(|n| n.start(bus.subscribe(), snap_rx.clone()))
    .unwrap_or_default();
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
    let faxstate = tokio::spawn(crate::routing::faxstate::run(
        bus.subscribe(),
        config_rx.clone(),
    ));

    let mut routing = vec![
        tokio::spawn(crate::routing::run(
            model.clone(),
            bus.clone(),
            config_rx.clone(),
            snap_tx,
            cancel.clone(),
        )),
        tokio::spawn(crate::routing::kamailio::run(
            snap_rx.clone(),
            config_rx.clone(),
            model.clone(),
            cancel.clone(),
        )),
        tokio::spawn(crate::routing::hook::run(
            snap_rx.clone(),
            config_rx.clone(),
            model.clone(),
            cancel.clone(),
        )),
    ];
    if let Some(a) = &config.snmp.agentx {
        // Validated with the config.
        if let Ok(address) = crate::snmp::agentx::Address::parse(a) {
            routing.push(tokio::spawn(crate::snmp::agentx::run(
                address,
                model.clone(),
                cancel.clone(),
            )));
        }
    }
    if let Some(l) = haproxy {
        routing.push(tokio::spawn(crate::routing::haproxy::serve(
            l,
            snap_rx.clone(),
            config_rx.clone(),
            cancel.clone(),
        )));
    }
    info!(
        listen = %listen, config = %source, server = %config.agent.server,
        checks = config.checks().len(),
        "telagent started."
    );

    crate::systemd::ready();
    if let Some(w) = crate::systemd::watchdog(cancel.clone()) {
        routing.push(w);
    }
    let mut current = config;
    let mut rediscover = tokio::time::interval_at(
        tokio::time::Instant::now() + base.discovery.interval,
        base.discovery.interval,
    );
    let mut hup = signal(SignalKind::hangup()).context("cannot install the SIGHUP handler")?;
    let mut term = signal(SignalKind::terminate()).context("cannot install the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot install the SIGINT handler")?;
    loop {
        tokio::select! {
            _ = hup.recv() => {
                crate::systemd::reloading();
                let reloaded = {
                    let (source, old, model) = (source.clone(), base.clone(), model.clone());
                    tokio::task::spawn_blocking(move || reload(&source, &old, &model))
                        .await
                        .ok()
                        .flatten()
                };
                if let Some((mut new, access)) = reloaded {
                    if let Some(dir) = &opts.state_dir {
                        new.agent.state_dir = dir.clone();
                    }
                    *api_state.access.write().unwrap_or_else(std::sync::PoisonError::into_inner) = access;
                    base = new;
                    current = discover(&base, &mut found).await;
                    scheduler.apply(&current);
                    config_tx.send_replace(current.clone());
                }
                crate::systemd::ready();
            }
            _ = rediscover.tick(), if base.discovery.enabled => {
                let new = discover(&base, &mut found).await;
                if new != current {
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
    crate::systemd::stopping();
    scheduler.shutdown().await;
    let _ = inventory.await;
    for task in routing.into_iter().chain(traffic_tasks) {
        let _ = task.await;
    }
    match tokio::time::timeout(Duration::from_secs(5), server).await {
        Ok(Ok(Err(e))) => warn!(error = %e, "HTTP server ended with an error."),
        Err(_) => warn!("HTTP server did not finish its requests within 5s."),
        _ => {}
    }
    bus.close();
    let _ = faxstate.await;
    for task in notifier {
        let _ = task.await;
    }
    let _ = tokio::task::spawn_blocking(move || audit.join()).await;
    info!("Stopped.");
    Ok(())
}

/// `base` with what discovery finds on this host, when `[discovery]` is on. Logs one line
/// per item whenever the findings differ from the last pass (`last`).
async fn discover(base: &Config, last: &mut Option<crate::discovery::Found>) -> Config {
    use crate::discovery::{self, Places};
    if !base.discovery.enabled {
        return base.clone();
    }
    let places = Places::of_host(&base.ports.lock_dir);
    let Ok(found) = tokio::task::spawn_blocking(move || discovery::discover(&places)).await else {
        return base.clone();
    };
    if last.as_ref() != Some(&found) {
        for line in found.summary() {
            info!(discovery = %line, "Discovered.");
        }
    }
    let merged = discovery::merge(base, &found);
    *last = Some(found);
    match merged {
        Ok(c) => c,
        Err(e) => {
            warn!(error = %e, "What discovery found is not a valid configuration; monitoring only the configured checks.");
            base.clone()
        }
    }
}

/// Loads the config (and the access files) again; on success returns them, on failure
/// keeps the old ones.
fn reload(source: &Source, current: &Config, model: &Model) -> Option<(Config, Access)> {
    let result = config::load(source)
        .map_err(|e| e.to_string())
        .and_then(|c| {
            let access = Access::load(&c.access).map_err(|e| format!("{source}: {e}"))?;
            Ok((c, access))
        });
    let mut m = model.write();
    m.reload.at = SystemTime::now();
    match result {
        Ok((new, access)) => {
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
                ("traffic", new.traffic != current.traffic),
                ("notify", new.notify != current.notify),
                ("snmp", new.snmp != current.snmp),
            ] {
                if changed {
                    warn!(
                        key = what,
                        "This key changed; it takes effect at the next restart."
                    );
                }
            }
            info!(config = %source, checks = new.checks().len(), "Configuration reloaded.");
            Some((new, access))
        }
        Err(e) => {
            m.reload.successful = false;
            m.reload.error = Some(e.clone());
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
        let (c, named) = {
            let config = config.borrow_and_update();
            let named: Vec<_> = config
                .modem
                .iter()
                .map(|m| crate::serial::inventory::Named {
                    name: m.device_name(),
                    path: PathBuf::from(&m.port),
                    lock_dir: m.lock_dir.clone(),
                })
                .collect();
            (config.ports.clone(), named)
        };
        let ports = if c.scan {
            let lock_dir = c.lock_dir.clone();
            tokio::task::spawn_blocking(move || {
                crate::serial::inventory::scan(
                    std::path::Path::new("/sys/class/tty"),
                    std::path::Path::new("/dev"),
                    &lock_dir,
                    &named,
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
