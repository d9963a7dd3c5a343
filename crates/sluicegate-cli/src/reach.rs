//! Whether brokers accept TCP connections: a quick answer, with the reason when they do not,
//! before (or instead of) waiting for librdkafka to give up on them.

use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use serde::Serialize;

/// The `host:port` addresses of a `bootstrap.servers` list, any `PROTOCOL://` prefix removed.
pub fn bootstrap_addresses(bootstrap: &str) -> Vec<String> {
    bootstrap
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(|a| a.split_once("://").map_or(a, |(_, rest)| rest).to_string())
        .collect()
}

/// What connecting to one address gave.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Reach {
    /// The address tried, `host:port`.
    pub address: String,
    /// Milliseconds the connection took, when it was accepted.
    pub connect_ms: Option<f64>,
    /// Why it failed, when it did.
    pub error: Option<String>,
}

impl Reach {
    /// Whether the address accepted a connection.
    pub fn ok(&self) -> bool {
        self.error.is_none()
    }

    /// `address: reason` or `address: connected in N ms`, for messages.
    pub fn describe(&self) -> String {
        match (&self.error, self.connect_ms) {
            (Some(e), _) => format!("{}: {e}", self.address),
            (None, Some(ms)) => format!("{}: connected in {ms:.1} ms", self.address),
            (None, None) => format!("{}: connected", self.address),
        }
    }
}

/// Opens (and closes at once) a TCP connection to every address, all at the same time; none
/// waits past `timeout`, name resolution included. Answers in the order given.
pub fn connect_all(addresses: &[String], timeout: Duration) -> Vec<Reach> {
    let deadline = Instant::now() + timeout;
    let (tx, rx) = mpsc::channel();
    for (i, address) in addresses.iter().enumerate() {
        let (tx, address) = (tx.clone(), address.clone());
        // A thread each: name resolution cannot be given a timeout, so it must not hold up
        // the others (a thread still resolving at the deadline is left behind).
        std::thread::spawn(move || {
            let _ = tx.send((i, connect(&address, deadline)));
        });
    }
    drop(tx);
    let mut found: Vec<Option<Reach>> = vec![None; addresses.len()];
    while found.iter().any(Option::is_none) {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok((i, reach)) => found[i] = Some(reach),
            Err(_) => break,
        }
    }
    found
        .into_iter()
        .zip(addresses)
        .map(|(reach, address)| {
            reach.unwrap_or_else(|| Reach {
                address: address.clone(),
                connect_ms: None,
                error: Some(format!("no answer within {timeout:?}")),
            })
        })
        .collect()
}

/// Connects to `address` (every address its name resolves to, until one accepts).
fn connect(address: &str, deadline: Instant) -> Reach {
    let failed = |error: String| Reach {
        address: address.to_string(),
        connect_ms: None,
        error: Some(error),
    };
    let port = address
        .rsplit_once(':')
        .map(|(_, port)| port.parse::<u16>());
    if !matches!(port, Some(Ok(_))) {
        return failed("not host:port (give the port, like 9092)".to_string());
    }
    let resolved: Vec<SocketAddr> = match address.to_socket_addrs() {
        Ok(found) => found.collect(),
        Err(e) => return failed(format!("cannot resolve the address: {e}")),
    };
    let mut last = String::from("the name resolves to no address");
    for socket in resolved {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return failed(format!("no answer in time ({last})"));
        }
        let started = Instant::now();
        match TcpStream::connect_timeout(&socket, left) {
            Ok(_) => {
                return Reach {
                    address: address.to_string(),
                    connect_ms: Some(started.elapsed().as_secs_f64() * 1e3),
                    error: None,
                }
            }
            Err(e) => last = e.to_string(),
        }
    }
    failed(last)
}

/// Fails, naming every bootstrap address and why, when none of them accepts a TCP connection
/// within `timeout`: then no Kafka request can succeed, and there is no need to wait for
/// librdkafka to give up.
pub fn require_bootstrap(bootstrap: &str, timeout: Duration) -> Result<()> {
    let addresses = bootstrap_addresses(bootstrap);
    if addresses.is_empty() {
        bail!("the bootstrap servers are empty: give host:port[,host:port...]");
    }
    let reached = connect_all(&addresses, timeout);
    if reached.iter().any(Reach::ok) {
        return Ok(());
    }
    let why: Vec<String> = reached.iter().map(Reach::describe).collect();
    bail!(
        "cannot reach the Kafka cluster: no bootstrap server accepts a connection ({})",
        why.join("; ")
    )
}

/// The message for a cluster that accepts connections but does not answer Kafka requests in
/// time: a TLS or SASL listener spoken to in plaintext, an overloaded broker, or something
/// else listening on the port.
pub fn no_answer(bootstrap: &str, timeout_secs: u64) -> String {
    format!(
        "{bootstrap} accepts connections but answered no metadata request within \
         {timeout_secs} s (is it a Kafka listener, and do the configuration's security settings \
         (security.protocol...) match it?)"
    )
}

/// `e` with [`no_answer`]'s explanation, unless it is a TLS or authentication failure, which
/// says why already.
pub fn explain(e: anyhow::Error, bootstrap: &str, timeout_secs: u64) -> anyhow::Error {
    if is_security_failure(&e) {
        e
    } else {
        e.context(no_answer(bootstrap, timeout_secs))
    }
}

/// Whether `e` is (caused by) a TLS or authentication failure.
pub fn is_security_failure(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        matches!(
            cause.downcast_ref::<sluicegate::Error>(),
            Some(sluicegate::Error::Authentication { .. } | sluicegate::Error::Tls(_))
        )
    })
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;

    use super::*;

    #[test]
    fn bootstrap_lists_split_into_addresses_without_protocols() {
        assert_eq!(
            bootstrap_addresses("a:9092, SSL://b:9093,,[::1]:9094"),
            ["a:9092", "b:9093", "[::1]:9094"]
        );
        assert!(bootstrap_addresses(" ").is_empty());
    }

    #[test]
    fn an_address_without_a_port_is_named_as_such() {
        let reached = connect_all(&["kafka".to_string()], Duration::from_secs(5));
        assert_eq!(
            reached[0].describe(),
            "kafka: not host:port (give the port, like 9092)"
        );
    }

    #[test]
    fn a_listening_port_is_reached_and_a_closed_one_is_named_with_its_reason() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let open = listener.local_addr().expect("address").to_string();
        let closed = {
            let spare = TcpListener::bind("127.0.0.1:0").expect("bind");
            spare.local_addr().expect("address").to_string()
        };
        let reached = connect_all(&[open.clone(), closed.clone()], Duration::from_secs(5));
        assert!(reached[0].ok(), "{reached:?}");
        assert_eq!(reached[0].address, open);
        assert!(!reached[1].ok(), "{reached:?}");
        assert!(reached[1].describe().starts_with(&format!("{closed}: ")));

        let err = require_bootstrap(&closed, Duration::from_secs(5))
            .unwrap_err()
            .to_string();
        assert!(err.contains(&closed), "{err}");
        assert!(require_bootstrap(&format!("{closed},{open}"), Duration::from_secs(5)).is_ok());
    }
}
