//! The running agent: builds the parts, starts them as named tasks in dependency order,
//! handles signals, and stops them in one explicit sequence.
//!
//! Start: the configuration (and what discovery adds to it), then the parts (model, bus,
//! routing snapshot channel, stores, listeners, each output with its own stats), the
//! metrics collectors in the order /metrics shows them, then the tasks: every subscriber
//! of the bus before the first probe, the checks last. SIGHUP reloads the config (the
//! file, name resolution, discovery and its parsing run on blocking threads): a rejected
//! file is logged, the previous config keeps running and
//! `telagent_config_last_reload_successful` goes to 0.
//!
//! Shutdown (SIGTERM, SIGINT), each step logged at debug: stop the probes (a command
//! check's process group is killed on the way), stop the outputs and inputs (routing,
//! HAProxy, Kamailio, hook, AgentX, traffic tails, inventory, the HTTP server finishing
//! the requests it has), drain the bus (notifications sent or left in the outbox, faxstate
//! calls), flush the audit log, close the stores.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::access::Access;
use crate::config::{self, Config, Source};
use crate::engine::bus::Bus;
use crate::engine::model::{rfc3339, Model};
use crate::engine::scheduler::Scheduler;
use crate::metrics::{bool01, seconds, Collector, Families, Metrics};
use crate::routing::{OutputStats, Published, Snapshot};
use crate::serial::inventory::Inventory;

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

/// Outcome of the last configuration (re)load.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReloadStatus {
    pub source: String,
    pub successful: bool,
    #[serde(with = "rfc3339")]
    pub at: SystemTime,
    pub error: Option<String>,
}

/// This agent: its server, when it started, and how its configuration last loaded.
#[derive(Debug)]
pub struct Info {
    pub server: String,
    pub started_at: SystemTime,
    reload: RwLock<ReloadStatus>,
}

impl Info {
    pub fn new(server: &str, source: &Source) -> Info {
        let now = SystemTime::now();
        Info {
            server: server.to_string(),
            started_at: now,
            reload: RwLock::new(ReloadStatus {
                source: source.to_string(),
                successful: true,
                at: now,
                error: None,
            }),
        }
    }

    pub fn reload(&self) -> ReloadStatus {
        self.reload
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn reloaded(&self, error: Option<String>) {
        let mut r = self
            .reload
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        r.at = SystemTime::now();
        r.successful = error.is_none();
        r.error = error;
    }
}

impl Collector for Info {
    fn collect(&self, f: &mut Families) {
        f.gauge(
            "telagent_build_info",
            "Build of this agent; the value is always 1.",
            &[("version", env!("CARGO_PKG_VERSION"))],
            1.0,
        );
        f.gauge(
            "telagent_start_time_seconds",
            "Start time of this agent, seconds since the Unix epoch.",
            &[],
            seconds(self.started_at),
        );
        f.gauge(
            "telagent_config_last_reload_successful",
            "1 if the last configuration load or reload succeeded, 0 if it was rejected (the previous configuration keeps running).",
            &[],
            bool01(self.reload().successful),
        );
    }
}

/// The agent's tasks, by name, joined in the order they were started.
#[derive(Default)]
struct Tasks(Vec<(&'static str, JoinHandle<()>)>);

impl Tasks {
    fn spawn(&mut self, name: &'static str, task: impl Future<Output = ()> + Send + 'static) {
        debug!(task = name, "Starting.");
        self.0.push((name, tokio::spawn(task)));
    }

    fn add(&mut self, name: &'static str, handles: Vec<JoinHandle<()>>) {
        debug!(task = name, tasks = handles.len(), "Starting.");
        self.0.extend(handles.into_iter().map(|h| (name, h)));
    }

    async fn join(self) {
        for (name, h) in self.0 {
            debug!(task = name, "Waiting for the task to end.");
            if let Err(e) = h.await {
                warn!(task = name, error = %e, "Task ended abnormally.");
            }
        }
    }
}

pub async fn run(opts: RunOptions) -> anyhow::Result<()> {
    let source = if opts.embedded {
        Source::Embedded
    } else {
        config::resolve_source(opts.config.as_deref())
    };
    let mut base = with_overrides(config::load(&source)?, &opts);
    let mut found = None;
    let mut current = discover(&base, &mut found)
        .await
        .unwrap_or_else(|| base.clone());
    let parts = Parts::build(&source, &current, &opts).await?;
    parts.register_metrics();
    let mut agent = parts.start(&current)?;
    crate::systemd::ready();

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
                if let Some(new) = agent.reload(&source, &base, &opts).await {
                    base = new;
                    current = discover(&base, &mut found)
                        .await
                        .unwrap_or_else(|| base.clone());
                    info!(config = %source, checks = current.checks().len(), "Configuration reloaded.");
                    agent.apply(&current);
                }
                crate::systemd::ready();
            }
            _ = rediscover.tick(), if base.discovery.enabled => {
                if let Some(new) = discover(&base, &mut found).await {
                    if new != current {
                        agent.apply(&new);
                        current = new;
                    }
                }
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    agent.stop().await;
    Ok(())
}

/// Everything the agent is made of, built before anything runs: a file, port or store
/// that cannot be had stops the start with a message saying which and what to do.
struct Parts {
    /// Held for the life of the process: one agent per state directory.
    _lock: std::fs::File,
    listen: SocketAddr,
    info: Arc<Info>,
    model: Arc<Model>,
    bus: Arc<Bus>,
    metrics: Arc<Metrics>,
    inventory: Arc<Inventory>,
    snapshot_tx: watch::Sender<Arc<Snapshot>>,
    snapshot: watch::Receiver<Arc<Snapshot>>,
    maintenance_tx: watch::Sender<Option<String>>,
    maintenance: watch::Receiver<Option<String>>,
    audit_stats: Arc<crate::audit::Stats>,
    recent: Arc<crate::audit::Recent>,
    kamailio_stats: Arc<OutputStats>,
    haproxy_stats: Arc<OutputStats>,
    hook_stats: Arc<OutputStats>,
    traffic: Arc<crate::traffic::Traffic>,
    notify_stats: Arc<crate::notify::Stats>,
    notifier: Option<crate::notify::Notifier>,
    agentx_stats: Arc<crate::snmp::agentx::Stats>,
    faults: Arc<crate::faults::Faults>,
    refusals: Arc<crate::http_server::Refusals>,
    agentx: Option<crate::snmp::agentx::Address>,
    access: Access,
    listener: tokio::net::TcpListener,
    /// The HTTPS listener and what it serves with, when `[api] tls_listen` is set.
    tls: Option<(tokio::net::TcpListener, crate::http_server::TlsSlot)>,
    haproxy: Option<tokio::net::TcpListener>,
}

impl Parts {
    async fn build(source: &Source, config: &Config, opts: &RunOptions) -> anyhow::Result<Parts> {
        let server = config.agent.server.clone();
        let listen = opts.listen.unwrap_or(config.agent.listen);
        let state_dir = config.agent.state_dir.clone();
        std::fs::create_dir_all(&state_dir).with_context(|| {
            format!(
                "cannot create the state directory {}; create it for the agent's user or set agent.state_dir",
                state_dir.display()
            )
        })?;
        let lock = lock_state_dir(&state_dir)?;
        let (snapshot_tx, snapshot) = watch::channel(Arc::new(Snapshot::empty(&server)));
        // An operator's drain lasts until it is ended, restarts included.
        let kept = crate::routing::load_maintenance(&crate::routing::maintenance_file(&state_dir));
        if let Some(reason) = &kept {
            warn!(%reason, "This server stays drained for maintenance, as before the restart; end the drain through POST /v1/server/maintenance.");
        }
        let (maintenance_tx, maintenance) = watch::channel(kept);
        let notify_stats = Arc::new(crate::notify::Stats::default());
        let haproxy =
            match &config.haproxy {
                Some(h) => Some(tokio::net::TcpListener::bind(h.listen).await.with_context(
                    || {
                        format!(
                            "cannot listen on {} for HAProxy's agent-check; set haproxy.listen",
                            h.listen
                        )
                    },
                )?),
                None => None,
            };
        Ok(Parts {
            _lock: lock,
            info: Arc::new(Info::new(&server, source)),
            model: Arc::new(Model::new()),
            bus: Arc::new(Bus::default()),
            metrics: Arc::new(Metrics::new(true)),
            inventory: Arc::new(Inventory::default()),
            snapshot_tx,
            snapshot,
            maintenance_tx,
            maintenance,
            audit_stats: Arc::new(crate::audit::Stats::default()),
            recent: Arc::new(crate::audit::Recent::load(&config.agent.audit_log_path())),
            kamailio_stats: OutputStats::new("kamailio"),
            haproxy_stats: OutputStats::new("haproxy"),
            hook_stats: OutputStats::new("hook"),
            traffic: Arc::new(crate::traffic::Traffic::open(
                &state_dir,
                &server,
                &config.traffic,
            )),
            notifier: crate::notify::Notifier::open(
                &config.notify,
                &state_dir,
                &server,
                notify_stats.clone(),
            )
            .map_err(|e| anyhow::anyhow!("{e}"))?,
            notify_stats,
            agentx_stats: Arc::new(crate::snmp::agentx::Stats::default()),
            faults: Arc::default(),
            refusals: Arc::default(),
            agentx: config
                .snmp
                .agentx
                .as_deref()
                .map(crate::snmp::agentx::Address::parse)
                .transpose()
                .map_err(|e| anyhow::anyhow!("{source}: snmp.agentx: {e}"))?,
            // The allowlist may name hosts: resolving them blocks.
            access: {
                let c = config.access.clone();
                tokio::task::spawn_blocking(move || Access::load(&c))
                    .await
                    .map_err(|e| anyhow::anyhow!("{source}: loading [access] ended abnormally: {e}"))?
                    .map_err(|e| anyhow::anyhow!("{source}: {e}"))?
            },
            listener: tokio::net::TcpListener::bind(listen).await.with_context(|| {
                format!("cannot listen on {listen}; is another program using it? Set agent.listen or --listen")
            })?,
            tls: match config.api.tls_listen {
                None => None,
                Some(at) => {
                    let loaded = crate::tls::load(&config.api)
                        .map_err(|e| anyhow::anyhow!("{source}: {e}"))?;
                    let listener = tokio::net::TcpListener::bind(at).await.with_context(|| {
                        format!("cannot listen on {at} for HTTPS; is another program using it? Set api.tls_listen")
                    })?;
                    Some((listener, Arc::new(RwLock::new(loaded))))
                }
            },
            haproxy,
            listen,
        })
    }

    /// The collectors, in the order /metrics shows their families.
    fn register_metrics(&self) {
        let m = &self.metrics;
        m.register(self.info.clone());
        m.register(self.audit_stats.clone());
        m.register(self.model.clone());
        m.register(Arc::new(Published(self.snapshot.clone())));
        m.register(self.kamailio_stats.clone());
        m.register(self.haproxy_stats.clone());
        m.register(self.hook_stats.clone());
        m.register(self.traffic.stats.clone());
        m.register(self.notify_stats.clone());
        m.register(self.agentx_stats.clone());
        m.register(self.refusals.clone());
        m.register(self.faults.clone());
        m.register(Arc::new(crate::notify::Suppressed(
            self.notify_stats.clone(),
        )));
        m.register(self.inventory.clone());
    }

    /// Starts the tasks: every subscriber of the bus before the first probe, the checks
    /// last.
    fn start(self, config: &Config) -> anyhow::Result<Running> {
        let Parts {
            _lock: lock,
            listen,
            info,
            model,
            bus,
            metrics,
            inventory,
            snapshot_tx,
            snapshot,
            maintenance_tx,
            maintenance,
            audit_stats,
            recent,
            kamailio_stats,
            haproxy_stats,
            hook_stats,
            traffic,
            notify_stats: _,
            notifier,
            agentx_stats,
            agentx,
            access,
            listener,
            tls,
            haproxy,
            faults,
            refusals,
        } = self;
        let server = info.server.clone();
        let (config_tx, config_rx) = watch::channel(config.clone());
        let outputs = CancellationToken::new();
        let mut tasks = Tasks::default();
        let mut drained = Tasks::default();
        debug!(task = "audit", "Starting.");
        let audit = crate::audit::start(
            config.agent.audit_log_path(),
            bus.subscribe(),
            audit_stats,
            recent.clone(),
        )
        .context("cannot start the audit writer thread")?;
        if let Some(n) = notifier {
            // Alarms of checks removed while the agent was stopped are cleared.
            let mut targets: Vec<(String, String)> = config
                .checks()
                .iter()
                .map(|(_, c)| (c.kind().to_string(), c.name().to_string()))
                .collect();
            targets.extend(
                config
                    .member
                    .iter()
                    .map(|m| ("server".to_string(), m.name.clone())),
            );
            n.clear_removed(&targets);
            drained.add(
                "notify",
                n.start(bus.subscribe(), snapshot.clone(), traffic.problem.clone()),
            );
        }
        let modems = section(&config_rx, |c| c.modem.clone(), &mut tasks, &outputs);
        drained.spawn("faxstate", crate::faxstate::run(bus.subscribe(), modems));
        let routing = section(&config_rx, routing_section, &mut tasks, &outputs);
        tasks.spawn(
            "routing",
            crate::routing::run(
                model.clone(),
                bus.clone(),
                routing,
                maintenance,
                snapshot_tx,
                outputs.clone(),
            ),
        );
        let kamailio = section(&config_rx, kamailio_section, &mut tasks, &outputs);
        tasks.spawn(
            "kamailio",
            crate::routing::kamailio::run(
                snapshot.clone(),
                kamailio,
                kamailio_stats,
                outputs.clone(),
            ),
        );
        let hook = section(&config_rx, |c| c.hook.clone(), &mut tasks, &outputs);
        tasks.spawn(
            "hook",
            crate::routing::hook::run(
                snapshot.clone(),
                hook,
                config.agent.state_dir.join("hook-state.json"),
                hook_stats,
                outputs.clone(),
            ),
        );
        if let Some(l) = haproxy {
            let members = section(&config_rx, |c| c.member.clone(), &mut tasks, &outputs);
            tasks.spawn(
                "haproxy",
                crate::routing::haproxy::serve(l, snapshot.clone(), members, outputs.clone()),
            );
        }
        let runtime = section(&config_rx, haproxy_section, &mut tasks, &outputs);
        tasks.spawn(
            "haproxy runtime",
            crate::routing::haproxy::push(
                snapshot.clone(),
                runtime,
                haproxy_stats,
                outputs.clone(),
            ),
        );
        if let Some(address) = agentx {
            let served = crate::snmp::agentx::Served {
                server: server.clone(),
                model: model.clone(),
                cluster: snapshot.clone(),
                traffic: traffic.stats.clone(),
                indexes: crate::snmp::index::Indexes::open(&config.agent.state_dir),
            };
            tasks.spawn(
                "agentx",
                crate::snmp::agentx::run(address, served, agentx_stats, outputs.clone()),
            );
        }
        tasks.add("traffic", traffic.start(&config.traffic, outputs.clone()));
        tasks.spawn(
            "inventory",
            inventory_task(inventory.clone(), config_rx.clone(), outputs.clone()),
        );
        let api = Arc::new(crate::api::ApiState {
            info,
            model: model.clone(),
            inventory,
            cluster: snapshot,
            metrics,
            access: RwLock::new(access),
            traffic: traffic.clone(),
            recent,
            maintenance: maintenance_tx,
            maintenance_file: crate::routing::maintenance_file(&config.agent.state_dir),
            refusals: refusals.clone(),
            throttle: Default::default(),
            body_timeout: config.api.request_timeout,
            event_bodies: tokio::sync::Semaphore::new(crate::api::EVENT_BODIES),
        });
        debug!(task = "http", "Starting.");
        let trusted: crate::http_server::Trusted = {
            let api = api.clone();
            Arc::new(move |ip| {
                api.access
                    .read()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .in_allowlist(ip)
            })
        };
        let gate = crate::http_server::Gate::new(
            config.api.fitted(config.checks().len()),
            trusted,
            refusals,
            faults.clone(),
        );
        let router = crate::api::router(api.clone());
        let tls_slot = tls.as_ref().map(|(_, slot)| slot.clone());
        if let Some((l, slot)) = tls {
            debug!(task = "https", "Starting.");
            let serve = crate::http_server::serve(
                l,
                router.clone(),
                gate.clone(),
                Some(slot),
                outputs.clone(),
            );
            tasks.add(
                "https",
                vec![tokio::spawn(async move {
                    if let Err(e) = serve.await {
                        warn!(error = %e, "The HTTPS server ended with an error.");
                    }
                })],
            );
        }
        let http = tokio::spawn(crate::http_server::serve(
            listener,
            router,
            gate,
            None,
            outputs.clone(),
        ));
        if let Some(w) = crate::systemd::watchdog(outputs.clone()) {
            tasks.add("watchdog", vec![w]);
        }
        let mut scheduler = Scheduler::new(
            model,
            bus.clone(),
            faults,
            &server,
            config.agent.max_concurrent_probes,
            traffic.stats.clone(),
        );
        traffic.watch(config.watched_lines());
        scheduler.apply(config);
        info!(
            listen = %listen, config = %api.info.reload().source, server = %server,
            checks = config.checks().len(),
            "telagent started."
        );
        Ok(Running {
            _lock: lock,
            scheduler,
            config_tx,
            api,
            outputs,
            tasks,
            drained,
            http,
            tls: tls_slot,
            audit,
            bus,
            traffic,
        })
    }
}

/// Takes `<state_dir>/telagent.lock` (flock, released by the kernel when the process
/// ends, kill -9 included): a second agent on the same state directory would send the
/// first one's AgentStop, raise its engineBoots and share its outbox and stores.
fn lock_state_dir(state_dir: &std::path::Path) -> anyhow::Result<std::fs::File> {
    use std::io::{Read, Seek, Write};
    use std::os::fd::AsRawFd;
    let path = state_dir.join("telagent.lock");
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    // SAFETY: a valid descriptor of an open file.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let mut holder = String::new();
        let _ = f.read_to_string(&mut holder);
        anyhow::bail!(
            "another telagent (pid {}) runs with the state directory {}; stop it, or give this one another agent.state_dir",
            holder.trim(),
            state_dir.display()
        );
    }
    f.set_len(0)?;
    f.rewind()?;
    writeln!(f, "{}", std::process::id())?;
    Ok(f)
}

/// What routing reads of the config.
fn routing_section(c: &Config) -> crate::routing::Section {
    crate::routing::Section {
        me: c.agent.server.clone(),
        cluster: c.cluster.clone(),
        members: c.member.clone(),
        groups: c.group.clone(),
        server: c.server.clone(),
        shared: shared_hashes(c),
    }
}

/// Hashes of the sections beyond [cluster], [[member]] and [[group]] that the agents of a
/// cluster should share (see [`crate::routing::Section::shared`]).
fn shared_hashes(c: &Config) -> std::collections::BTreeMap<String, String> {
    use crate::routing::hash_of;
    use serde_json::json;
    // Sorted: the order of the lists and of the checks in the file means nothing.
    let mut rules = c.server.clone();
    for list in [&mut rules.critical, &mut rules.drain, &mut rules.lines] {
        list.sort();
    }
    let rules = &rules;
    let mut checks = c.checks();
    checks.sort_by(|a, b| a.1.name().cmp(b.1.name()));
    let named: Vec<serde_json::Value> = checks
        .iter()
        .filter(|(_, s)| {
            let n = s.name().to_string();
            rules.critical.contains(&n) || rules.drain.contains(&n) || rules.lines.contains(&n)
        })
        .map(|(_, s)| {
            let sc = s.schedule(&c.defaults);
            json!([
                s.name(),
                s.kind(),
                humantime::format_duration(sc.interval).to_string(),
                humantime::format_duration(sc.timeout).to_string(),
                humantime::format_duration(sc.failing_interval).to_string(),
                sc.rise,
                sc.fall,
                humantime::format_duration(sc.hold).to_string(),
                humantime::format_duration(sc.flap.window).to_string(),
                sc.flap.transitions,
                sc.flap.ratio,
            ])
        })
        .collect();
    [
        ("server", json!({ "rules": rules, "checks": named })),
        // Not the RPC URL: agents may reach one Kamailio by different addresses.
        (
            "kamailio",
            json!(c.kamailio.as_ref().map(|k| (
                k.set,
                k.reassert_interval.as_millis() as u64,
                k.rweight
            ))),
        ),
        (
            "haproxy",
            json!(c.haproxy.as_ref().map(|h| h.listen.port())),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), hash_of(&v)))
    .collect()
}

/// What the HAProxy runtime push reads of the config.
fn haproxy_section(c: &Config) -> crate::routing::haproxy::Section {
    crate::routing::haproxy::Section {
        haproxy: c.haproxy.clone(),
        members: c.member.clone(),
        me: c.agent.server.clone(),
    }
}

/// What the Kamailio output reads of the config.
fn kamailio_section(c: &Config) -> crate::routing::kamailio::Section {
    crate::routing::kamailio::Section {
        kamailio: c.kamailio.clone(),
        members: c.member.clone(),
    }
}

/// The running agent.
struct Running {
    /// The state directory's lock, held while the agent runs.
    _lock: std::fs::File,
    scheduler: Scheduler,
    config_tx: watch::Sender<Config>,
    api: Arc<crate::api::ApiState>,
    outputs: CancellationToken,
    tasks: Tasks,
    drained: Tasks,
    http: JoinHandle<std::io::Result<()>>,
    /// What the HTTPS listener serves with; a reload reads the files again.
    tls: Option<crate::http_server::TlsSlot>,
    audit: std::thread::JoinHandle<()>,
    bus: Arc<Bus>,
    traffic: Arc<crate::traffic::Traffic>,
}

impl Running {
    /// Reads the config file (and its access files) again on a blocking thread; the new
    /// base config, or None when it was rejected (the running one stays).
    async fn reload(&self, source: &Source, base: &Config, opts: &RunOptions) -> Option<Config> {
        let (source, old, info, opts) = (
            source.clone(),
            base.clone(),
            self.api.info.clone(),
            opts.clone(),
        );
        let (new, access, tls) = match tokio::task::spawn_blocking(move || {
            reload(&source, &old, &info, &opts)
        })
        .await
        {
            Ok(r) => r?,
            Err(e) => {
                error!(error = %e, "The reload ended abnormally; the previous configuration keeps running.");
                self.api
                    .info
                    .reloaded(Some(format!("the reload ended abnormally: {e}")));
                return None;
            }
        };
        *self
            .api
            .access
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = access;
        if let (Some(slot), Some(tls)) = (&self.tls, tls) {
            *slot
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(tls);
        }
        Some(new)
    }

    /// Makes the checks and every output follow `config`.
    fn apply(&mut self, config: &Config) {
        self.traffic.watch(config.watched_lines());
        self.scheduler.apply(config);
        self.config_tx.send_replace(config.clone());
    }

    /// The shutdown sequence, each step logged at debug.
    async fn stop(self) {
        info!("Shutting down.");
        crate::systemd::stopping();
        debug!("Stopping the probes.");
        self.scheduler.shutdown().await;
        debug!("Stopping the outputs and inputs.");
        self.outputs.cancel();
        self.tasks.join().await;
        debug!("Waiting for the HTTP server to finish its requests.");
        let mut http = self.http;
        match tokio::time::timeout(Duration::from_secs(5), &mut http).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => warn!(error = %e, "HTTP server ended with an error."),
            Ok(Err(e)) => error!(error = %e, "HTTP server task ended abnormally."),
            Err(_) => {
                warn!("HTTP server did not finish its requests within 5s; closing them.");
                http.abort();
            }
        }
        debug!("Draining the bus.");
        self.bus.close();
        self.drained.join().await;
        debug!("Flushing the audit log.");
        let audit = self.audit;
        if !matches!(
            tokio::task::spawn_blocking(move || audit.join()).await,
            Ok(Ok(()))
        ) {
            error!("The audit writer ended abnormally; transitions queued for it may be missing from the audit log.");
        }
        debug!("Closing the stores.");
        drop(self.api);
        drop(self.traffic);
        info!("Stopped.");
    }
}

/// One section of the config as a watch of its own, following reloads: an output is
/// handed only what it reads, and wakes only when that changes.
fn section<T>(
    config: &watch::Receiver<Config>,
    pick: fn(&Config) -> T,
    tasks: &mut Tasks,
    cancel: &CancellationToken,
) -> watch::Receiver<T>
where
    T: PartialEq + Send + Sync + 'static,
{
    let (tx, rx) = watch::channel(pick(&config.borrow()));
    let (mut config, cancel) = (config.clone(), cancel.clone());
    tasks.spawn("config section", async move {
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                r = config.changed() => if r.is_err() { return },
            }
            let v = pick(&config.borrow_and_update());
            tx.send_if_modified(|old| {
                let changed = *old != v;
                if changed {
                    *old = v;
                }
                changed
            });
        }
    });
    rx
}

/// The config with the command line's overrides applied.
fn with_overrides(mut c: Config, opts: &RunOptions) -> Config {
    if let Some(dir) = &opts.state_dir {
        c.agent.state_dir = dir.clone();
    }
    c
}

/// `base` with what discovery finds on this host, when `[discovery]` is on; None when the
/// pass failed (the caller keeps what it monitors). Logs one line per item whenever the
/// findings differ from the last pass (`last`).
async fn discover(base: &Config, last: &mut Option<crate::discovery::Found>) -> Option<Config> {
    use crate::discovery::{self, Places};
    if !base.discovery.enabled {
        return Some(base.clone());
    }
    // Reading the host and parsing what was found both block: a thread of their own,
    // bounded, so a spool that cannot be read in time leaves the configured checks.
    let config = base.clone();
    let pass = tokio::task::spawn_blocking(move || {
        let found = discovery::discover(&Places::of_host(&config.ports.lock_dir));
        let merged = config.with_discovered(&found);
        (found, merged)
    });
    let (found, merged) = match tokio::time::timeout(Duration::from_secs(10), pass).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            error!(error = %e, "Discovery ended abnormally; what it found before stays monitored.");
            return None;
        }
        Err(_) => {
            warn!("Discovery did not finish within 10s; what it found before stays monitored.");
            return None;
        }
    };
    if last.as_ref() != Some(&found) {
        for line in found.summary() {
            info!(discovery = %line, "Discovered.");
        }
    }
    *last = Some(found);
    Some(merged)
}

/// The HTTPS settings of a reload: the certificate and key read again.
type Tls = Option<Arc<rustls::ServerConfig>>;

/// Loads the config (and the access and TLS files) again; on success returns them, on
/// failure keeps the old ones. Blocking: runs on a blocking thread.
fn reload(
    source: &Source,
    current: &Config,
    info: &Info,
    opts: &RunOptions,
) -> Option<(Config, Access, Tls)> {
    let result = config::load(source)
        .map_err(|e| e.to_string())
        .and_then(|c| {
            let access = Access::load(&c.access).map_err(|e| format!("{source}: {e}"))?;
            let tls = crate::tls::load(&c.api).map_err(|e| format!("{source}: {e}"))?;
            Ok((with_overrides(c, opts), access, tls))
        });
    match result {
        Ok((new, access, tls)) => {
            info.reloaded(None);
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
                (
                    "agent.max_concurrent_probes",
                    new.agent.max_concurrent_probes != current.agent.max_concurrent_probes,
                ),
                (
                    "haproxy.listen",
                    new.haproxy.as_ref().map(|h| h.listen)
                        != current.haproxy.as_ref().map(|h| h.listen),
                ),
                ("api", new.api.fixed() != current.api.fixed()),
                (
                    "discovery.interval",
                    new.discovery.interval != current.discovery.interval,
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
            Some((new, access, tls))
        }
        Err(e) => {
            info.reloaded(Some(e.clone()));
            error!(error = %e, "Configuration rejected; the previous configuration keeps running.");
            None
        }
    }
}

/// Refreshes the serial-port inventory.
async fn inventory_task(
    inventory: Arc<Inventory>,
    mut config: watch::Receiver<Config>,
    cancel: CancellationToken,
) {
    loop {
        let (c, modems) = {
            let config = config.borrow_and_update();
            let modems: Vec<_> = config
                .checks()
                .into_iter()
                .filter_map(|(_, s)| match s {
                    crate::checks::CheckSpec::Modem(m) => Some(m),
                    _ => None,
                })
                .collect();
            (config.ports.clone(), modems)
        };
        let ports = if c.scan {
            let lock_dir = c.lock_dir.clone();
            // Resolving the modems' device names and reading sysfs and locks block.
            let scan = tokio::task::spawn_blocking(move || {
                let named: Vec<_> = modems
                    .iter()
                    .map(|m| crate::serial::inventory::Named {
                        name: m.device_name(),
                        path: PathBuf::from(&m.port),
                        lock_dir: m.lock_dir.clone().unwrap_or_else(|| lock_dir.clone()),
                    })
                    .collect();
                crate::serial::inventory::scan(
                    std::path::Path::new("/sys/class/tty"),
                    std::path::Path::new("/dev"),
                    &lock_dir,
                    &named,
                )
            });
            match scan.await {
                Ok(ports) => ports,
                Err(e) => {
                    error!(error = %e, "The serial-port scan ended abnormally; the inventory is empty until the next scan.");
                    Vec::new()
                }
            }
        } else {
            Vec::new()
        };
        inventory.set(ports);
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(c.interval) => {}
            _ = config.changed() => {}
        }
    }
}
