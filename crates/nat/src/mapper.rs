//! [`PortMapper`]: the tokio task that drives the lifecycle core and does its I/O.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::{Id, JoinSet};

use crate::client::{NatPmpClient, PcpClient};
use crate::lifecycle::{Action, Core, ExternalReport, Grant, Key, ProbeInfo, QueryInfo};
use crate::natpmp::{self, NatPmpError};
use crate::pcp::PcpError;
use crate::upnp::Upnp;
use crate::{Error, MapProtocol, MappingMethod, NatEvent, NatState, PortMapperConfig};

/// Capacity of the command channel of [`PortMapper::add`] and [`PortMapper::remove`].
const COMMAND_CAPACITY: usize = 32;

/// Keeps ports mapped on the gateway, in a task of its own.
///
/// [`PortMapper::start`] spawns the task. It probes PCP, NAT-PMP and UPnP in parallel (each
/// within [`PortMapperConfig::probe_timeout`]), maps every requested port with the most
/// preferred method that answered (one method only, so the gateway never holds two mappings
/// for one port), asking for the same external port as the internal one first, renews each
/// mapping at half its granted lifetime, maps everything again when the gateway restarts, and
/// reports all of it as [`NatEvent`]s. Every request is bounded in time; failures are events.
///
/// Events go to a bounded channel ([`PortMapperConfig::event_capacity`]). The task never waits
/// for the reader: when the channel is full an event is dropped and counted in
/// [`NatState::events_dropped`]; [`PortMapper::state`] always has the current picture.
///
/// The gateway is checked (NAT-PMP external address, PCP ANNOUNCE, UPnP external address) at
/// the renewal interval, and at least every minute, so a gateway restart or a new external
/// address is noticed within a minute even with long leases.
///
/// [`PortMapper::shutdown`] deletes the mappings, bounded by three times
/// [`PortMapperConfig::request_timeout`] plus 500 ms (a map request in flight, which may take
/// two UPnP calls, is completed first, then deleted). Dropping the `PortMapper` does the same
/// in the background while the runtime keeps running.
#[derive(Debug)]
pub struct PortMapper {
    commands: mpsc::Sender<Command>,
    state: watch::Receiver<NatState>,
    task: tokio::task::JoinHandle<()>,
    shutdown_bound: Duration,
}

/// The mapper's task has stopped (after [`PortMapper::shutdown`] started, or a runtime
/// shutdown).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the port mapper has stopped")]
pub struct Stopped;

#[derive(Debug)]
enum Command {
    Add(MapProtocol, u16),
    Remove(MapProtocol, u16),
    Shutdown(oneshot::Sender<()>),
}

impl PortMapper {
    /// Starts mapping `requests` (protocol, internal port) and returns the handle and the
    /// event receiver.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime (it spawns the task with `tokio::spawn`).
    pub fn start(
        config: PortMapperConfig,
        requests: Vec<(MapProtocol, u16)>,
    ) -> (Self, mpsc::Receiver<NatEvent>) {
        let (event_tx, event_rx) = mpsc::channel(config.event_capacity.max(1));
        let (command_tx, command_rx) = mpsc::channel(COMMAND_CAPACITY);
        let core = Core::new(&config, &requests, rand::random());
        let (state_tx, state_rx) = watch::channel(core.state());
        let shutdown_bound = config.request_timeout.saturating_mul(3) + Duration::from_millis(500);
        let driver = Driver {
            core,
            config: Arc::new(config),
            events: event_tx,
            dropped: 0,
            state: state_tx,
            pmp_gateway: None,
            upnp: None,
            probes: JoinSet::new(),
            ops: JoinSet::new(),
            pending: HashMap::new(),
        };
        let task = tokio::spawn(driver.run(command_rx));
        (Self { commands: command_tx, state: state_rx, task, shutdown_bound }, event_rx)
    }

    /// A snapshot of the mapper: method, gateway, external address, double NAT, mappings.
    pub fn state(&self) -> NatState {
        self.state.borrow().clone()
    }

    /// Waits until the state changes (for example a mapping was made) and returns it.
    pub async fn changed(&mut self) -> Result<NatState, Stopped> {
        self.state.changed().await.map_err(|_| Stopped)?;
        Ok(self.state())
    }

    /// Asks for a mapping of `port` (nothing happens if it is already asked for).
    pub async fn add(&self, protocol: MapProtocol, port: u16) -> Result<(), Stopped> {
        self.commands.send(Command::Add(protocol, port)).await.map_err(|_| Stopped)
    }

    /// Deletes the mapping of `port`; a [`NatEvent::Removed`] follows.
    pub async fn remove(&self, protocol: MapProtocol, port: u16) -> Result<(), Stopped> {
        self.commands.send(Command::Remove(protocol, port)).await.map_err(|_| Stopped)
    }

    /// Deletes every mapping and stops the task, within three request timeouts plus 500 ms;
    /// after that the task is aborted.
    pub async fn shutdown(self) {
        let (reply, done) = oneshot::channel();
        let bound = self.shutdown_bound;
        let mut task = self.task;
        let finished = tokio::time::timeout(bound, async {
            if self.commands.send(Command::Shutdown(reply)).await.is_ok() {
                let _ = done.await;
            }
            let _ = (&mut task).await;
        })
        .await;
        if finished.is_err() {
            tracing::warn!(?bound, "port mapper shutdown took too long; aborting its task");
            task.abort();
        }
    }
}

/// The result of one I/O operation.
enum Outcome {
    Probe(MappingMethod, u32, Result<(ProbeInfo, Option<Arc<Upnp>>), Error>),
    Map(Key, MappingMethod, Result<Grant, Error>),
    Unmap(Key, Result<(), Error>),
    Query(MappingMethod, Result<QueryInfo, Error>),
}

/// What an operation was, to report a task that panicked.
#[derive(Clone, Copy)]
enum Pending {
    Probe(MappingMethod, u32),
    Map(Key, MappingMethod),
    Unmap(Key),
    Query(MappingMethod),
}

struct Driver {
    core: Core,
    config: Arc<PortMapperConfig>,
    events: mpsc::Sender<NatEvent>,
    dropped: u64,
    state: watch::Sender<NatState>,
    /// The NAT-PMP/PCP server address of this probe round.
    pmp_gateway: Option<Ipv4Addr>,
    upnp: Option<Arc<Upnp>>,
    probes: JoinSet<Outcome>,
    ops: JoinSet<Outcome>,
    pending: HashMap<Id, Pending>,
}

impl Driver {
    async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        self.core.start(Instant::now());
        let mut reply: Option<oneshot::Sender<()>> = None;
        let mut stopping = false;
        loop {
            self.flush();
            if self.core.is_finished() {
                break;
            }
            let deadline = self.core.poll_timeout().map(tokio::time::Instant::from_std);
            tokio::select! {
                command = commands.recv(), if !stopping => {
                    let now = Instant::now();
                    match command {
                        Some(Command::Add(protocol, port)) => self.core.add(protocol, port, now),
                        Some(Command::Remove(protocol, port)) => {
                            self.core.remove(protocol, port, now);
                        }
                        Some(Command::Shutdown(done)) => {
                            reply = Some(done);
                            stopping = true;
                            self.core.shutdown(now);
                        }
                        None => {
                            stopping = true;
                            self.core.shutdown(now);
                        }
                    }
                }
                Some(joined) = self.probes.join_next_with_id(), if !self.probes.is_empty() => {
                    self.joined(joined);
                }
                Some(joined) = self.ops.join_next_with_id(), if !self.ops.is_empty() => {
                    self.joined(joined);
                }
                () = sleep_until(deadline) => self.core.handle_timeout(Instant::now()),
            }
        }
        self.flush();
        if let Some(reply) = reply {
            let _ = reply.send(());
        }
    }

    /// Performs the core's actions, sends its events and publishes the state.
    fn flush(&mut self) {
        while let Some(action) = self.core.poll_action() {
            self.perform(action);
        }
        while let Some(event) = self.core.poll_event() {
            tracing::debug!(?event, "port mapping");
            match self.events.try_send(event) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(event)) => {
                    self.dropped += 1;
                    tracing::warn!(?event, dropped = self.dropped, "NAT event channel full");
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {}
            }
        }
        let mut state = self.core.state();
        state.events_dropped = self.dropped;
        self.state.send_if_modified(|current| {
            let changed = *current != state;
            *current = state;
            changed
        });
    }

    fn joined(&mut self, joined: Result<(Id, Outcome), tokio::task::JoinError>) {
        let now = Instant::now();
        let outcome = match joined {
            Ok((id, outcome)) => {
                self.pending.remove(&id);
                outcome
            }
            Err(error) => {
                let Some(pending) = self.pending.remove(&error.id()) else { return };
                if error.is_cancelled() {
                    return; // an aborted probe: its round is over
                }
                tracing::error!(%error, "a port mapping request panicked");
                match pending {
                    Pending::Probe(m, round) => Outcome::Probe(m, round, Err(Error::TaskFailed)),
                    Pending::Map(key, m) => Outcome::Map(key, m, Err(Error::TaskFailed)),
                    Pending::Unmap(key) => Outcome::Unmap(key, Err(Error::TaskFailed)),
                    Pending::Query(m) => Outcome::Query(m, Err(Error::TaskFailed)),
                }
            }
        };
        match outcome {
            Outcome::Probe(method, round, result) => {
                let result = result.map(|(info, upnp)| {
                    if upnp.is_some() {
                        self.upnp = upnp;
                    }
                    info
                });
                self.core.probe_done(method, round, result, now);
            }
            Outcome::Map(key, method, result) => self.core.map_done(key, method, result, now),
            Outcome::Unmap(key, result) => self.core.unmap_done(key, result, now),
            Outcome::Query(method, result) => self.core.query_done(method, result, now),
        }
    }

    fn perform(&mut self, action: Action) {
        let config = Arc::clone(&self.config);
        let timeout = config.request_timeout;
        let upnp = self.upnp.clone();
        match action {
            Action::Probe { method, round } => {
                // The route is read again at every probe round: the network may have changed.
                self.pmp_gateway = config.gateway.or_else(crate::route::default_gateway);
                let gateway = self.pmp_gateway;
                let bound = config.probe_timeout;
                let probe = async move {
                    let result =
                        match tokio::time::timeout(bound, probe(method, gateway, bound)).await {
                            Ok(result) => result,
                            Err(_) => Err(Error::Timeout(bound)),
                        };
                    Outcome::Probe(method, round, result)
                };
                let id = self.probes.spawn(probe).id();
                self.pending.insert(id, Pending::Probe(method, round));
            }
            Action::Map { method, protocol, internal_port, external_port, lifetime, nonce } => {
                let gateway = self.pmp_gateway;
                let key = (protocol, internal_port);
                let op = async move {
                    let result = map(
                        method,
                        gateway,
                        upnp,
                        &config,
                        (protocol, internal_port, external_port),
                        lifetime,
                        nonce,
                    );
                    Outcome::Map(key, method, bounded(timeout * 2, result).await)
                };
                let id = self.ops.spawn(op).id();
                self.pending.insert(id, Pending::Map(key, method));
            }
            Action::Unmap { method, protocol, internal_port, external_port, nonce } => {
                let gateway = self.pmp_gateway;
                let key = (protocol, internal_port);
                let op = async move {
                    let result = unmap(
                        method,
                        gateway,
                        upnp,
                        timeout,
                        (protocol, internal_port, external_port),
                        nonce,
                    );
                    Outcome::Unmap(key, bounded(timeout, result).await)
                };
                let id = self.ops.spawn(op).id();
                self.pending.insert(id, Pending::Unmap(key));
            }
            Action::QueryExternal(method) => {
                let gateway = self.pmp_gateway;
                let op = async move {
                    let result = query(method, gateway, upnp, timeout);
                    Outcome::Query(method, bounded(timeout, result).await)
                };
                let id = self.ops.spawn(op).id();
                self.pending.insert(id, Pending::Query(method));
            }
        }
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

async fn bounded<T>(
    timeout: Duration,
    future: impl Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    tokio::time::timeout(timeout, future).await.unwrap_or(Err(Error::Timeout(timeout)))
}

fn server(gateway: Option<Ipv4Addr>) -> Result<SocketAddrV4, Error> {
    gateway.map(|g| SocketAddrV4::new(g, natpmp::PORT)).ok_or(Error::NoGateway)
}

/// The UPnP gateway; the core asks for UPnP operations only after a UPnP probe succeeded.
fn upnp_or(upnp: Option<Arc<Upnp>>) -> Result<Arc<Upnp>, Error> {
    upnp.ok_or(Error::NoGateway)
}

fn seconds(duration: Duration) -> u32 {
    u32::try_from(duration.as_secs()).unwrap_or(u32::MAX)
}

fn report(address: Ipv4Addr) -> ExternalReport {
    if address.is_unspecified() {
        ExternalReport::Missing
    } else {
        ExternalReport::Address(address)
    }
}

/// One probe: whether the method answers, and what it says.
async fn probe(
    method: MappingMethod,
    gateway: Option<Ipv4Addr>,
    timeout: Duration,
) -> Result<(ProbeInfo, Option<Arc<Upnp>>), Error> {
    match method {
        MappingMethod::Pcp => {
            let server = server(gateway)?;
            let mut client = PcpClient::connect(server).await?;
            let request = crate::pcp::Request::Announce {
                client: std::net::IpAddr::V4(client.local_address()),
            };
            let response = client.request(&request, timeout).await?;
            // Any PCP answer but "unsupported version" shows a PCP server.
            if let Err(error @ PcpError::UnsupportedVersion) = response.result {
                return Err(error.into());
            }
            let info =
                ProbeInfo { gateway: *server.ip(), external: None, epoch: Some(response.epoch) };
            Ok((info, None))
        }
        MappingMethod::NatPmp => {
            let server = server(gateway)?;
            let mut client = NatPmpClient::connect(server).await?;
            let response = client.request(&natpmp::Request::ExternalAddress, timeout).await?;
            let external = match response {
                natpmp::Response::ExternalAddress { address, .. } => Some(report(address)),
                natpmp::Response::Failure { error: NatPmpError::NetworkFailure, .. } => {
                    Some(ExternalReport::Missing)
                }
                natpmp::Response::Failure {
                    error:
                        error @ (NatPmpError::UnsupportedVersion | NatPmpError::UnsupportedOpcode),
                    ..
                } => return Err(error.into()),
                _ => None,
            };
            let info = ProbeInfo { gateway: *server.ip(), external, epoch: Some(response.epoch()) };
            Ok((info, None))
        }
        MappingMethod::Upnp => {
            let upnp = Upnp::search(timeout).await?;
            let external = upnp.external(timeout).await?;
            let info = ProbeInfo { gateway: upnp.address(), external: Some(external), epoch: None };
            Ok((info, Some(Arc::new(upnp))))
        }
    }
}

async fn map(
    method: MappingMethod,
    gateway: Option<Ipv4Addr>,
    upnp: Option<Arc<Upnp>>,
    config: &PortMapperConfig,
    (protocol, internal_port, external_port): (MapProtocol, u16, u16),
    lifetime: Duration,
    nonce: [u8; 12],
) -> Result<Grant, Error> {
    let timeout = config.request_timeout;
    match method {
        MappingMethod::Pcp => {
            let mut client = PcpClient::connect(server(gateway)?).await?;
            let grant = client
                .map(nonce, protocol, internal_port, external_port, seconds(lifetime), timeout)
                .await?;
            Ok(Grant {
                external_port: grant.external.port(),
                external: Some(report(*grant.external.ip())),
                lifetime: Some(Duration::from_secs(u64::from(grant.lifetime))),
                epoch: Some(grant.epoch),
            })
        }
        MappingMethod::NatPmp => {
            let mut client = NatPmpClient::connect(server(gateway)?).await?;
            let (external_port, granted, epoch) = client
                .map(protocol, internal_port, external_port, seconds(lifetime), timeout)
                .await?;
            Ok(Grant {
                external_port,
                external: None,
                lifetime: Some(Duration::from_secs(u64::from(granted))),
                epoch: Some(epoch),
            })
        }
        MappingMethod::Upnp => {
            let upnp = upnp_or(upnp)?;
            let (external_port, lifetime) = upnp
                .map(protocol, internal_port, external_port, lifetime, &config.description, timeout)
                .await?;
            Ok(Grant { external_port, external: None, lifetime, epoch: None })
        }
    }
}

async fn unmap(
    method: MappingMethod,
    gateway: Option<Ipv4Addr>,
    upnp: Option<Arc<Upnp>>,
    timeout: Duration,
    (protocol, internal_port, external_port): (MapProtocol, u16, u16),
    nonce: [u8; 12],
) -> Result<(), Error> {
    match method {
        MappingMethod::Pcp => {
            let mut client = PcpClient::connect(server(gateway)?).await?;
            client.map(nonce, protocol, internal_port, external_port, 0, timeout).await.map(drop)
        }
        MappingMethod::NatPmp => {
            let mut client = NatPmpClient::connect(server(gateway)?).await?;
            client.map(protocol, internal_port, 0, 0, timeout).await.map(drop)
        }
        MappingMethod::Upnp => upnp_or(upnp)?.unmap(protocol, external_port, timeout).await,
    }
}

async fn query(
    method: MappingMethod,
    gateway: Option<Ipv4Addr>,
    upnp: Option<Arc<Upnp>>,
    timeout: Duration,
) -> Result<QueryInfo, Error> {
    match method {
        MappingMethod::NatPmp => {
            let mut client = NatPmpClient::connect(server(gateway)?).await?;
            match client.request(&natpmp::Request::ExternalAddress, timeout).await? {
                natpmp::Response::ExternalAddress { address, epoch } => {
                    Ok(QueryInfo { external: Some(report(address)), epoch: Some(epoch) })
                }
                natpmp::Response::Failure { error: NatPmpError::NetworkFailure, epoch, .. } => {
                    Ok(QueryInfo { external: Some(ExternalReport::Missing), epoch: Some(epoch) })
                }
                natpmp::Response::Failure { error, .. } => Err(error.into()),
                _ => Err(Error::UnexpectedResponse),
            }
        }
        MappingMethod::Upnp => {
            let external = upnp_or(upnp)?.external(timeout).await?;
            Ok(QueryInfo { external: Some(external), epoch: None })
        }
        // PCP learns the external address from MAP responses; ANNOUNCE gives the epoch.
        MappingMethod::Pcp => {
            let mut client = PcpClient::connect(server(gateway)?).await?;
            let epoch = client.announce(timeout).await?;
            Ok(QueryInfo { external: None, epoch: Some(epoch) })
        }
    }
}
