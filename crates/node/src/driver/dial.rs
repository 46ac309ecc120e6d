//! Dialling a peer at several addresses: each after a short stagger, the first that
//! authenticates wins (as Happy Eyeballs does for a host's addresses).

use std::time::Duration;

use futures::StreamExt as _;
use futures::stream::FuturesUnordered;
use sinew_transport::{Connection, DialError};
use sinew_types::Addr;

use crate::shared::Transports;

/// Dials `addrs` in order: the next starts `stagger` after the one before, or at once when
/// every dial in flight has failed. Returns the first connection that authenticated; the
/// dials still in flight are dropped (their sockets closed). If all fail, the first
/// address's error.
pub(crate) async fn staggered(
    transports: &Transports,
    addrs: Vec<Addr>,
    stagger: Duration,
) -> Result<Connection, DialError> {
    let dial = |addr: Addr| {
        let transport = transports.get(addr.scheme());
        async move {
            match transport {
                Some(transport) => transport.dial(addr).await,
                None => Err(DialError::UnsupportedScheme(addr.scheme())),
            }
        }
    };
    let mut pending = addrs.into_iter();
    let mut in_flight = FuturesUnordered::new();
    let mut first_error = None;
    let mut index = 0usize;
    let mut start_next = |in_flight: &mut FuturesUnordered<_>| match pending.next() {
        Some(addr) => {
            let i = index;
            index += 1;
            let attempt = dial(addr);
            in_flight.push(async move { (i, attempt.await) });
            true
        }
        None => false,
    };
    start_next(&mut in_flight);
    loop {
        let next = tokio::time::sleep(stagger);
        tokio::pin!(next);
        tokio::select! {
            done = in_flight.next() => match done {
                Some((_, Ok(connection))) => return Ok(connection),
                Some((i, Err(error))) => {
                    if i == 0 || first_error.is_none() {
                        first_error = Some(error);
                    }
                    if in_flight.is_empty() && !start_next(&mut in_flight) {
                        break;
                    }
                }
                None => break,
            },
            () = &mut next, if !in_flight.is_empty() => {
                start_next(&mut in_flight);
            }
        }
    }
    Err(first_error.unwrap_or(DialError::Timeout))
}
