//! Setting the SDK up: [`init`] installs the layer as the global subscriber and returns a
//! [`Guard`]; [`spoor_layer`] gives the layer and guard for a subscriber of your own.
//! Dropping the guard flushes (up to [`Config::flush_timeout`]), stops the transport and
//! reports on stderr what did not reach the agent. [`flush`] covers `std::process::exit`
//! paths, which run no destructors.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tracing_subscriber::layer::SubscriberExt as _;

use crate::config::{Config, ConfigError};
use crate::layer::SpoorLayer;
use crate::transport::{FlushReport, Transport, TransportError};

/// The transport installed by [`init`], for [`flush`] and the panic hook.
static INSTALLED: Mutex<Option<(Arc<Transport>, Duration)>> = Mutex::new(None);

fn installed() -> Option<(Arc<Transport>, Duration)> {
    INSTALLED.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// Why the SDK could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InitError {
    /// A `SPOOR_*` variable is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The transport thread could not start.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// Another global `tracing` subscriber is already installed.
    #[error("a global tracing subscriber is already installed")]
    AlreadyInstalled,
}

/// Keeps the pipeline running; dropping it flushes and reports. See the module docs.
#[must_use = "dropping the guard stops the transport"]
#[derive(Debug)]
pub struct Guard {
    transport: Arc<Transport>,
    timeout: Duration,
    global: bool,
}

impl Guard {
    /// Waits up to the flush timeout until everything logged so far was sent or spilled.
    pub fn flush(&self) -> FlushReport {
        self.transport.flush(self.timeout)
    }

    /// The counts so far, without waiting.
    pub fn stats(&self) -> FlushReport {
        self.transport.stats()
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let report = self.transport.shutdown(self.timeout);
        if self.global {
            let mut installed = INSTALLED.lock().unwrap_or_else(|e| e.into_inner());
            if installed
                .as_ref()
                .is_some_and(|(t, _)| Arc::ptr_eq(t, &self.transport))
            {
                *installed = None;
            }
        }
        if !report.all_sent() {
            eprintln!("spoor-sdk: {report}");
        }
    }
}

/// The layer and its guard, for adding to a subscriber of your own:
///
/// ```no_run
/// use tracing_subscriber::layer::SubscriberExt as _;
///
/// let (layer, guard) = spoor_sdk::spoor_layer(spoor_sdk::Config::from_env()?)?;
/// let subscriber = tracing_subscriber::registry().with(layer);
/// tracing::subscriber::with_default(subscriber, || tracing::info!("Scoped."));
/// drop(guard);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn spoor_layer(config: Config) -> Result<(SpoorLayer, Guard), InitError> {
    let transport = Arc::new(Transport::start(&config)?);
    let layer = SpoorLayer::new(&config, Arc::clone(&transport));
    Ok((
        layer,
        Guard {
            transport,
            timeout: config.flush_timeout,
            global: false,
        },
    ))
}

/// Installs the layer as the global subscriber (and, unless [`Config::panic_hook`] is off,
/// the panic hook). Prefer [`crate::init!`], which also fills in your crate's version.
///
/// ```no_run
/// fn main() -> Result<(), Box<dyn std::error::Error>> {
///     let _guard = spoor_sdk::init!()?;
///     let _run = spoor_sdk::task("parse_email", "msg-42", 1, 0);
///     tracing::info!(bytes = 512, "Parsed.");
///     Ok(())
/// }
/// ```
pub fn init(config: Config) -> Result<Guard, InitError> {
    let panic_hook = config.panic_hook;
    let (layer, mut guard) = spoor_layer(config)?;
    let subscriber = tracing_subscriber::registry().with(layer);
    tracing::subscriber::set_global_default(subscriber).map_err(|_| InitError::AlreadyInstalled)?;
    *INSTALLED.lock().unwrap_or_else(|e| e.into_inner()) =
        Some((Arc::clone(&guard.transport), guard.timeout));
    guard.global = true;
    if panic_hook {
        crate::panic::install();
    }
    Ok(guard)
}

/// Flushes what [`init`] installed, up to its flush timeout; call it before
/// `std::process::exit`. `None` when nothing is installed.
pub fn flush() -> Option<FlushReport> {
    installed().map(|(transport, timeout)| transport.flush(timeout))
}

/// Flushes the installed pipeline (for the panic hook).
pub(crate) fn flush_installed() {
    let _ = flush();
}

/// Initialises the SDK from the environment ([`Config::from_env`]) or from a given
/// [`Config`], with `version` defaulting to the calling crate's version, plus
/// `+<revision>` when `SPOOR_GIT_REVISION` was set at build time. Returns
/// `Result<Guard, InitError>`.
///
/// ```no_run
/// let _guard = spoor_sdk::init!()?;
/// # Ok::<(), spoor_sdk::InitError>(())
/// ```
#[macro_export]
macro_rules! init {
    () => {
        $crate::Config::from_env()
            .map_err($crate::InitError::from)
            .and_then(|config| $crate::init!(config))
    };
    ($config:expr) => {
        $crate::init($crate::Config::with_default_version(
            $config,
            $crate::config::build_version(
                env!("CARGO_PKG_VERSION"),
                option_env!("SPOOR_GIT_REVISION"),
            ),
        ))
    };
}
