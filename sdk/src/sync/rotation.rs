//! Which endpoint, and which of its addresses, the Watch stream connects to next.
//!
//! The client's endpoints are taken in turn, round-robin, and each endpoint's host name is
//! resolved afresh whenever the rotation comes to it, each of its addresses tried in turn: a
//! name behind several replicas works like a list of endpoints, and a change of its addresses
//! is picked up. A failure moves on to the next address at once; the client backs off only
//! when every endpoint has failed in a row, that is, when the rotation has gone round them all
//! since the last stream that lasted.

use std::net::SocketAddr;

/// What to do after a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Next {
    /// Connect to the next address now.
    Now,
    /// Every endpoint failed in a row: back off before going round again. `rounds` counts the
    /// earlier rounds that failed as well (0 the first time), for the exponential backoff.
    Backoff { rounds: u32 },
}

/// The rotation over `endpoints` endpoints (indexes into the client's list).
#[derive(Debug)]
pub(super) struct Rotation {
    endpoints: usize,
    /// The endpoint in use or to try.
    endpoint: usize,
    /// Its addresses, as resolved when the rotation came to it; empty until then.
    addresses: Vec<SocketAddr>,
    /// The address in use or to try, an index into `addresses`.
    address: usize,
    /// Endpoints whose every address failed since the last stream that lasted.
    failed_endpoints: usize,
    /// Rounds in a row in which every endpoint failed.
    failed_rounds: u32,
    /// The endpoint and address of the last stream a server answered, to count failovers.
    answered: Option<(usize, SocketAddr)>,
}

impl Rotation {
    /// A rotation starting with the first of `endpoints` endpoints (at least one).
    pub(super) fn new(endpoints: usize) -> Rotation {
        Rotation {
            endpoints: endpoints.max(1),
            endpoint: 0,
            addresses: Vec::new(),
            address: 0,
            failed_endpoints: 0,
            failed_rounds: 0,
            answered: None,
        }
    }

    /// The endpoint to connect to (an index into the client's list).
    pub(super) fn endpoint(&self) -> usize {
        self.endpoint
    }

    /// The address to connect to; `None` when the endpoint's name is to be resolved first
    /// ([`resolved`](Self::resolved)).
    pub(super) fn address(&self) -> Option<SocketAddr> {
        self.addresses.get(self.address).copied()
    }

    /// The current endpoint's name resolves to `addresses`; an empty list is a failure of the
    /// endpoint ([`failed`](Self::failed)).
    pub(super) fn resolved(&mut self, addresses: Vec<SocketAddr>) {
        self.addresses = addresses;
        self.address = 0;
    }

    /// A server answered the subscription on the current address. Returns whether this is a
    /// failover: another endpoint or address than the last stream a server answered.
    pub(super) fn answered(&mut self) -> bool {
        let Some(address) = self.address() else {
            return false;
        };
        let now = (self.endpoint, address);
        self.answered
            .replace(now)
            .is_some_and(|before| before != now)
    }

    /// The stream on the current address lasted (the server sent data and kept it up for a
    /// heartbeat interval): whatever failed before is forgotten, and the next failure starts
    /// a new round.
    pub(super) fn lasted(&mut self) {
        self.failed_endpoints = 0;
        self.failed_rounds = 0;
    }

    /// The current address failed (or the endpoint's name did not resolve): moves on to the
    /// next address, or the next endpoint when this one has no more, and says whether to back
    /// off first.
    pub(super) fn failed(&mut self) -> Next {
        self.address += 1;
        if self.address < self.addresses.len() {
            return Next::Now;
        }
        self.endpoint = (self.endpoint + 1) % self.endpoints;
        self.addresses.clear();
        self.address = 0;
        self.failed_endpoints += 1;
        if self.failed_endpoints < self.endpoints {
            return Next::Now;
        }
        self.failed_endpoints = 0;
        let rounds = self.failed_rounds;
        self.failed_rounds = self.failed_rounds.saturating_add(1);
        Next::Backoff { rounds }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn one_endpoint_with_one_address_backs_off_after_each_failure_more_each_round() {
        let mut rotation = Rotation::new(1);
        for rounds in 0..4 {
            assert_eq!(rotation.address(), None, "resolved again each round");
            rotation.resolved(vec![addr(1)]);
            assert_eq!(rotation.failed(), Next::Backoff { rounds });
        }
        rotation.resolved(vec![addr(1)]);
        rotation.lasted();
        assert_eq!(rotation.failed(), Next::Backoff { rounds: 0 });
    }

    #[test]
    fn failures_move_round_robin_at_once_and_back_off_when_every_endpoint_failed() {
        let mut rotation = Rotation::new(3);
        let mut visited = Vec::new();
        let mut nexts = Vec::new();
        for _ in 0..6 {
            let endpoint = rotation.endpoint();
            visited.push(endpoint);
            rotation.resolved(vec![addr(endpoint as u16)]);
            nexts.push(rotation.failed());
        }
        assert_eq!(visited, [0, 1, 2, 0, 1, 2]);
        assert_eq!(
            nexts,
            [
                Next::Now,
                Next::Now,
                Next::Backoff { rounds: 0 },
                Next::Now,
                Next::Now,
                Next::Backoff { rounds: 1 },
            ]
        );
    }

    #[test]
    fn a_stream_that_lasted_starts_a_new_round_from_the_next_endpoint() {
        let mut rotation = Rotation::new(2);
        rotation.resolved(vec![addr(1)]);
        assert_eq!(rotation.failed(), Next::Now);
        rotation.resolved(vec![addr(2)]);
        rotation.lasted();
        // The second endpoint served, then failed: the first is tried at once, and only when
        // it fails too does the client back off, from the start of the backoff again.
        assert_eq!(rotation.failed(), Next::Now);
        assert_eq!(rotation.endpoint(), 0);
        rotation.resolved(vec![addr(1)]);
        assert_eq!(rotation.failed(), Next::Backoff { rounds: 0 });
    }

    #[test]
    fn every_address_of_a_name_is_tried_before_the_next_endpoint() {
        let mut rotation = Rotation::new(2);
        rotation.resolved(vec![addr(1), addr(2), addr(3)]);
        let mut tried = Vec::new();
        while rotation.endpoint() == 0 {
            tried.push(rotation.address().expect("resolved"));
            assert_eq!(rotation.failed(), Next::Now);
        }
        assert_eq!(tried, [addr(1), addr(2), addr(3)]);
        assert_eq!(
            rotation.address(),
            None,
            "the next endpoint is resolved first"
        );
        // A name that resolves to nothing fails its endpoint as a whole.
        rotation.resolved(Vec::new());
        assert_eq!(rotation.failed(), Next::Backoff { rounds: 0 });
        assert_eq!(rotation.endpoint(), 0);
    }

    #[test]
    fn a_failover_is_a_stream_answered_elsewhere_than_the_last() {
        let mut rotation = Rotation::new(2);
        rotation.resolved(vec![addr(1)]);
        assert!(!rotation.answered(), "the first stream");
        rotation.failed();
        rotation.resolved(vec![addr(2)]);
        rotation.failed();
        // Refused by the second, back on the first: not a failover.
        rotation.resolved(vec![addr(1)]);
        assert!(!rotation.answered());
        rotation.failed();
        rotation.resolved(vec![addr(2)]);
        assert!(rotation.answered());
        assert!(!rotation.answered(), "the same address again");
    }
}
