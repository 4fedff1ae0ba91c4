//! Starting and stopping a Quarters server (used by `serve`, `demo` and `bench`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use quarters_api::App;
use quarters_control::ControlPlane;
use quarters_invoke::{Manager, ManagerConfig};
use quarters_sandbox::cgroup::CgroupLayout;
use quarters_sandbox::{BwrapConfig, BwrapSandbox, ScratchConfig, ScratchDisks};
use quarters_telemetry::LogStore;
use quarters_types::Arns;
use sha2::Digest;
use tokio::sync::oneshot;

/// Everything `quarters serve` can be told (each also a `QUARTERS_*` variable).
#[derive(Debug, Clone, clap::Args)]
pub struct ServerConfig {
    /// Address of the AWS-compatible API.
    #[arg(long, env = "QUARTERS_LISTEN", default_value = "127.0.0.1:9000")]
    pub listen: String,
    /// Where functions, code and logs are kept.
    #[arg(long, env = "QUARTERS_DATA_DIR", default_value = "./.quarters")]
    pub data_dir: PathBuf,
    /// Where environments' private sockets live (default: /run/quarters/<instance>, or a
    /// directory under the system temp dir when /run is not writable).
    #[arg(long, env = "QUARTERS_RUN_DIR")]
    pub run_dir: Option<PathBuf>,
    /// Seconds an idle environment is kept warm before it is destroyed.
    #[arg(long, env = "QUARTERS_IDLE_TIMEOUT", default_value_t = 300)]
    pub idle_timeout: u64,
    /// Seconds after which an environment is recycled, busy or not (0 = never).
    #[arg(long, env = "QUARTERS_MAX_LIFETIME", default_value_t = 7200)]
    pub max_lifetime: u64,
    /// Seconds a runtime may take to ask for its first event.
    #[arg(long, env = "QUARTERS_INIT_TIMEOUT", default_value_t = 10)]
    pub init_timeout: u64,
    /// Invocations in flight across the server.
    #[arg(long, env = "QUARTERS_ACCOUNT_CONCURRENCY", default_value_t = 1000)]
    pub account_concurrency: u32,
    /// The most memory, in MB, committed to environments: the sum of the MemorySize of every
    /// live environment (pooled ones included). A new environment that would exceed it evicts
    /// idle environments, least recently used first, or is refused with 429 when every
    /// environment is busy. 0: no limit.
    #[arg(long, env = "QUARTERS_MEMORY_BUDGET_MB", default_value_t = 0)]
    pub memory_budget_mb: u64,
    /// Leave the host's cgroup mount options alone. By default the server remounts a cgroup
    /// hierarchy with `favordynmods`, which makes entering a new sandbox's cgroups cost
    /// microseconds instead of an RCU grace period (8-16 ms per cold start here), at the price
    /// of slightly slower fork and exit host-wide.
    #[arg(long, env = "QUARTERS_NO_FAVORDYNMODS")]
    pub no_favordynmods: bool,
    /// Most processes (and threads) one environment may have.
    #[arg(long, env = "QUARTERS_PIDS_MAX", default_value_t = 1024)]
    pub pids_max: u32,
    /// Run sandboxes without seccomp filters and with a writable root (only to measure what
    /// hardening costs; never in production).
    #[arg(long, env = "QUARTERS_NO_HARDENING", hide = true)]
    pub no_hardening: bool,
    /// Seconds before the first retry of a failed asynchronous invocation (the second waits
    /// twice as long), as Lambda's one minute.
    #[arg(long, env = "QUARTERS_ASYNC_RETRY_DELAY", default_value_t = 60.0)]
    pub async_retry_delay: f64,
    /// Per function, the most active tenants that keep their own metric series at /metrics;
    /// the others are folded into `tenant="__other__"`.
    #[arg(long, env = "QUARTERS_METRICS_TOP_TENANTS", default_value_t = 100)]
    pub metrics_top_tenants: usize,
    /// Credentials for container registries, `HOST[:PORT]=USER:PASSWORD`, comma-separated
    /// (anonymous pulls need none).
    #[arg(long, env = "QUARTERS_REGISTRY_AUTH", value_parser = parse_registry_auth, default_value = "")]
    pub registry_auth: RegistryAuth,
    /// Region in ARNs.
    #[arg(long, env = "QUARTERS_REGION", default_value = "us-east-1")]
    pub region: String,
    /// Account id in ARNs.
    #[arg(long, env = "QUARTERS_ACCOUNT_ID", default_value = "000000000000")]
    pub account_id: String,
    /// The administrator's access key id (with --admin-secret-access-key). Without them, keys are
    /// made at the first start of a data directory, shown once, and kept in
    /// `<data dir>/admin-credentials`.
    #[arg(long, env = "QUARTERS_ADMIN_ACCESS_KEY_ID", requires = "admin_secret_access_key")]
    pub admin_access_key_id: Option<String>,
    /// The administrator's secret access key.
    #[arg(long, env = "QUARTERS_ADMIN_SECRET_ACCESS_KEY", requires = "admin_access_key_id", hide_env_values = true)]
    pub admin_secret_access_key: Option<String>,
    /// Development only: accept requests without a valid SigV4 signature.
    #[arg(long, env = "QUARTERS_NO_AUTH")]
    pub no_auth: bool,
    /// Address of the API gateway's data plane (`off`: none).
    #[arg(long, env = "QUARTERS_GATEWAY_LISTEN", default_value = "127.0.0.1:8080")]
    pub gateway_listen: String,
    /// Domain of the gateway's `{api-id}.execute-api.<domain>` hosts.
    #[arg(long, env = "QUARTERS_GATEWAY_DOMAIN", default_value = "localhost")]
    pub gateway_domain: String,
}

pub struct RunningServer {
    pub addr: SocketAddr,
    /// The admin's keys (None with authentication off), for the in-process demo's client.
    pub admin: Option<(String, String)>,
    /// Where the gateway's data plane listens, if it does.
    pub gateway_addr: Option<SocketAddr>,
    gateway_task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
    cgroups: CgroupLayout,
    run_dir: PathBuf,
    /// For the last usage flush at stop.
    usage: Arc<quarters_telemetry::usage::UsageMeter>,
    logs: Arc<LogStore>,
}

impl RunningServer {
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stop serving and end every environment.
    pub async fn stop(mut self) -> Result<()> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        self.task.await.context("server task")?.context("server")?;
        if let Some(g) = self.gateway_task.take() {
            g.await.context("gateway task")?.context("gateway")?;
        }
        let (usage, logs) = (self.usage.clone(), self.logs.clone());
        if let Ok(Err(e)) = tokio::task::spawn_blocking(move || usage.flush(&logs)).await {
            tracing::warn!(error = %e, "the last usage flush failed");
        }
        // Every environment is gone: remove this instance's own parents too.
        self.cgroups.remove_parents();
        let _ = std::fs::remove_dir_all(self.run_dir.join(quarters_invoke::RUNTIMES_DIR));
        let _ = std::fs::remove_file(self.run_dir.join(quarters_sandbox::INIT_FILE));
        let _ = std::fs::remove_dir(&self.run_dir);
        Ok(())
    }

    /// Serve until the process gets SIGINT or SIGTERM.
    pub async fn run_until_signal(self) -> Result<()> {
        wait_for_signal().await;
        tracing::info!("stopping: ending every environment");
        self.stop().await
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// A short, path-safe name for this server instance, derived from its data directory.
fn instance_name(data_dir: &Path) -> String {
    let digest = sha2::Sha256::digest(data_dir.as_os_str().as_encoded_bytes());
    hex::encode(&digest[..6])
}

fn default_run_dir(instance: &str) -> PathBuf {
    let run = Path::new("/run/quarters");
    if std::fs::create_dir_all(run).is_ok() {
        return run.join(instance);
    }
    // SAFETY: getuid has no preconditions and cannot fail.
    let uid = unsafe { libc::getuid() };
    std::env::temp_dir().join(format!("quarters-{uid}")).join(instance)
}

pub async fn start(cfg: &ServerConfig) -> Result<RunningServer> {
    std::fs::create_dir_all(&cfg.data_dir).with_context(|| format!("creating {}", cfg.data_dir.display()))?;
    let data_dir = cfg.data_dir.canonicalize().context("data dir")?;
    let instance = instance_name(&data_dir);
    let run_dir = cfg.run_dir.clone().unwrap_or_else(|| default_run_dir(&instance));
    // Whatever an earlier run of this instance left (after a crash or kill -9) goes first.
    let cgroups = CgroupLayout::detect(&instance);
    if !cfg.no_favordynmods {
        match cgroups.favor_dynamic_modifications() {
            Ok(Some(path)) => {
                tracing::info!(mount = %path.display(), "cgroups remounted with favordynmods (cheap migrations)")
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %e, "cannot set favordynmods: every cold start waits for an RCU grace period")
            }
        }
    }
    let removed = cgroups.remove_leftovers();
    if removed > 0 {
        tracing::warn!(removed, "removed cgroups left by an earlier run");
    }
    if run_dir.exists() {
        std::fs::remove_dir_all(&run_dir).with_context(|| format!("clearing {}", run_dir.display()))?;
    }
    let arns = Arns { region: cfg.region.clone(), account: cfg.account_id.clone() };
    let control = Arc::new(ControlPlane::open(&data_dir, arns.clone(), cfg.account_concurrency)?);
    // New code packages' Python sources are compiled once, not at every cold start.
    control.code_store().set_prepare(Arc::new(|tree: &std::path::Path| {
        quarters_invoke::runtimes::precompile_python(tree);
    }));
    let logs = Arc::new(LogStore::open(&data_dir.join("logs.db"))?);
    // Log groups' retention (PutRetentionPolicy), applied once a minute.
    let weak = Arc::downgrade(&logs);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tick.tick().await;
            let Some(store) = weak.upgrade() else { return };
            let now = quarters_types::time::now_ms();
            match tokio::task::spawn_blocking(move || store.enforce_retention(now)).await {
                Ok(Ok(n)) if n > 0 => tracing::info!(deleted = n, "log events past their group's retention deleted"),
                Ok(Err(e)) => tracing::warn!(error = %e, "log retention"),
                _ => {}
            }
        }
    });
    let mut sandbox = BwrapSandbox::new(BwrapConfig {
        bwrap: BwrapConfig::find_bwrap()?,
        init_exe: quarters_sandbox::install_init(&run_dir).context("installing the sandbox init")?,
        cgroups: cgroups.clone(),
        pids_max: cfg.pids_max,
        hardening: !cfg.no_hardening,
    })?;
    // Each environment's network namespace is made here, with its Runtime API listener inside.
    match quarters_sandbox::netns::NetnsFactory::start(8, quarters_sandbox::RUNTIME_API_ADDR) {
        Ok(f) => sandbox = sandbox.with_netns(Arc::new(f)),
        Err(e) => {
            tracing::warn!(error = %e, "cannot make network namespaces here: the Runtime API is relayed by the sandbox init")
        }
    }
    // /tmp on a scratch disk per environment, so it does not count against function memory.
    match ScratchDisks::new(ScratchConfig::new(data_dir.join("scratch"))) {
        Ok(disks) => sandbox = sandbox.with_scratch(Arc::new(disks)),
        Err(e) => {
            tracing::warn!(error = %e, "scratch disks unavailable: /tmp is a tmpfs and counts against function memory")
        }
    }
    let manager = Manager::new(
        ManagerConfig {
            run_dir: run_dir.clone(),
            idle_timeout: Duration::from_secs(cfg.idle_timeout),
            max_lifetime: (cfg.max_lifetime > 0).then(|| Duration::from_secs(cfg.max_lifetime)),
            init_timeout: Duration::from_secs(cfg.init_timeout),
            account_concurrency: cfg.account_concurrency,
            memory_budget_mb: (cfg.memory_budget_mb > 0).then_some(cfg.memory_budget_mb),
            arns: arns.clone(),
        },
        Arc::new(sandbox),
        logs.clone(),
    )?;
    let listener =
        tokio::net::TcpListener::bind(&cfg.listen).await.with_context(|| format!("listening on {}", cfg.listen))?;
    let addr = listener.local_addr()?;
    // Environments reach this API through their relay at 127.0.0.1:9002, never unauthenticated.
    manager.set_api_relay((!cfg.no_auth).then_some(addr));
    let events = quarters_events::EventQueue::open(
        &data_dir.join("events.db"),
        quarters_events::QueueConfig {
            retry_base_delay: Duration::from_secs_f64(cfg.async_retry_delay),
            arns: arns.clone(),
            ..Default::default()
        },
    )?;
    let metrics = Arc::new(quarters_telemetry::metrics::Metrics::new(cfg.metrics_top_tenants));
    let usage = Arc::new(quarters_telemetry::usage::UsageMeter::default());
    let invoker = quarters_api::events::ManagerInvoker {
        control: control.clone(),
        manager: manager.clone(),
        metrics: metrics.clone(),
        usage: usage.clone(),
    };
    events.start(Arc::new(invoker.clone()))?;
    let gateway = quarters_gateway::dataplane::Gateway::new(
        Arc::new(quarters_gateway::store::Store::open(&data_dir).context("opening the gateway store")?),
        Arc::new(invoker),
        quarters_gateway::dataplane::Settings {
            region: cfg.region.clone(),
            account: cfg.account_id.clone(),
            domain: cfg.gateway_domain.clone(),
        },
    );
    // Usage is written every few seconds (and read after a flush).
    let (meter, store) = (Arc::downgrade(&usage), Arc::downgrade(&logs));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            let (Some(meter), Some(store)) = (meter.upgrade(), store.upgrade()) else { return };
            if let Ok(Err(e)) = tokio::task::spawn_blocking(move || meter.flush(&store)).await {
                tracing::warn!(error = %e, "usage flush failed; kept for the next one");
            }
        }
    });
    let images = Arc::new(
        quarters_image::ImageStore::open(data_dir.join("images"), cfg.registry_auth.0.clone())
            .context("opening the image store")?,
    );
    let (usage_at_stop, logs_at_stop) = (usage.clone(), logs.clone());
    let mut identity = quarters_identity::Identity::open(
        data_dir.join("identity.db"),
        quarters_api::auth::master_key(&data_dir).context("the master key")?,
        &cfg.account_id,
    )
    .context("opening the identity store")?;
    let admin = if cfg.no_auth {
        tracing::warn!("authentication is OFF (--no-auth): anyone who reaches {} can do anything", cfg.listen);
        None
    } else {
        let given = cfg.admin_access_key_id.clone().zip(cfg.admin_secret_access_key.clone());
        let ((id, secret), made) =
            quarters_api::auth::admin_credentials(&data_dir, given).context("the admin credentials")?;
        if made {
            eprintln!(
                "Quarters made its admin credentials (shown once; kept in {}):\n  AWS_ACCESS_KEY_ID={id}\n  AWS_SECRET_ACCESS_KEY={secret}",
                data_dir.join("admin-credentials").display()
            );
        }
        identity.set_admin(&id, &secret);
        Some((id, secret))
    };
    let identity = Arc::new(identity);
    // Environments get their execution role's credentials, and tenant roles' for their tenant.
    manager.set_credentials(Some(Arc::new(quarters_api::identity::IdentityCredentials {
        identity: identity.clone(),
        control: control.clone(),
    })));
    let s3_identity = Arc::new(quarters_api::identity::S3Identity(identity.clone()));
    let s3 = quarters_s3::service(data_dir.join("s3"), s3_identity.clone(), s3_identity)
        .map_err(|e| anyhow::anyhow!("opening the S3 store: {e}"))?;
    let auth = if cfg.no_auth {
        quarters_api::auth::Authenticator::disabled()
    } else {
        quarters_api::auth::Authenticator::new(identity.clone())
    };
    let app = Arc::new(App {
        control,
        manager,
        logs,
        events,
        images,
        metrics,
        queries: Default::default(),
        usage,
        base_url: format!("http://{addr}"),
        gateway: gateway.clone(),
        auth,
        identity,
        s3: Some(s3),
    });
    quarters_api::restore_pools(&app);
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let (stopping, stop_seen) = tokio::sync::watch::channel(false);
    let (mut gateway_addr, mut gateway_task) = (None, None);
    if cfg.gateway_listen != "off" {
        match tokio::net::TcpListener::bind(&cfg.gateway_listen).await {
            Ok(l) => {
                gateway_addr = l.local_addr().ok();
                let mut seen = stop_seen;
                gateway_task = Some(tokio::spawn(quarters_gateway::dataplane::serve(gateway, l, async move {
                    let _ = seen.wait_for(|stop| *stop).await;
                })));
                tracing::info!(addr = ?gateway_addr, "the API gateway is serving");
            }
            Err(e) => tracing::warn!(
                error = %e,
                "cannot listen on {} for the API gateway: it is not served (set --gateway-listen)",
                cfg.gateway_listen
            ),
        }
    }
    let task = tokio::spawn(quarters_api::serve(app, listener, async move {
        let _ = stop_rx.await;
        let _ = stopping.send(true);
    }));
    tracing::info!(%addr, data_dir = %data_dir.display(), "quarters is serving the Lambda API");
    Ok(RunningServer {
        addr,
        admin,
        gateway_addr,
        gateway_task,
        stop: Some(stop_tx),
        task,
        cgroups,
        run_dir,
        usage: usage_at_stop,
        logs: logs_at_stop,
    })
}

/// Registry credentials by host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegistryAuth(pub std::collections::HashMap<String, (String, String)>);

fn parse_registry_auth(s: &str) -> Result<RegistryAuth, String> {
    let mut out = std::collections::HashMap::new();
    for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (host, creds) = item.split_once('=').ok_or_else(|| format!("{item}: expected HOST=USER:PASSWORD"))?;
        let (user, password) = creds.split_once(':').ok_or_else(|| format!("{item}: expected HOST=USER:PASSWORD"))?;
        out.insert(host.to_string(), (user.to_string(), password.to_string()));
    }
    Ok(RegistryAuth(out))
}
