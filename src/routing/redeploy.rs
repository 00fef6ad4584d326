//! Routes that survive a redeploy (docs/performance.md, "Redeploys").
//!
//! `docker compose up -d` recreates a changed service: the old container stops and is removed,
//! then the new one starts on the same service IP and port, typically within a second or two.
//! If the route went with the old container, clients would get 404 until the new one is
//! routed. So a container that goes away keeps its place in the route set for a bounded grace
//! period, until a routable container of the same repository and service replaces it (or the
//! same container comes back). Requests that reach the gap find the port closed; Traefik's
//! retry middleware on the entrypoints (written by `renet proxy config`) retries them with
//! backoff until the new container answers. After the grace period a container that did not
//! come back loses its routes as before.
//!
//! Only a repository's own containers linger in its own routes, so a tenant gains nothing over
//! others from it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use crate::addresses::NetworkId;
use crate::routing::build::{Container, Health, LABEL_SERVICE_NAME};

/// The departed containers still routed, by container ID.
#[derive(Debug, Default)]
pub struct Lingering {
    grace: Duration,
    departed: BTreeMap<String, (Container, Instant)>,
}

fn service_key(c: &Container) -> (NetworkId, Option<&str>) {
    (c.network_id, c.labels.get(LABEL_SERVICE_NAME))
}

fn routable(c: &Container) -> bool {
    matches!(c.health, Health::None | Health::Healthy)
}

impl Lingering {
    pub fn new(grace: Duration) -> Lingering {
        Lingering {
            grace,
            departed: BTreeMap::new(),
        }
    }

    /// The containers to build from: `live`, plus the ones that left `previous_live` less than
    /// the grace period ago and have no routable replacement yet. Sorted like
    /// `Discovery::containers`.
    pub fn effective(
        &mut self,
        previous_live: &[Container],
        live: &[Container],
        now: Instant,
    ) -> Vec<Container> {
        if self.grace.is_zero() {
            return live.to_vec();
        }
        let live_ids: BTreeSet<&str> = live.iter().map(|c| c.id.as_str()).collect();
        for c in previous_live {
            if !live_ids.contains(c.id.as_str()) && routable(c) {
                self.departed
                    .entry(c.id.clone())
                    .or_insert_with(|| (c.clone(), now));
            }
        }
        let replaced: BTreeSet<(NetworkId, Option<&str>)> = live
            .iter()
            .filter(|c| routable(c) && c.labels.contains_key(LABEL_SERVICE_NAME))
            .map(service_key)
            .collect();
        let grace = self.grace;
        self.departed.retain(|id, (c, since)| {
            !live_ids.contains(id.as_str())
                && now.duration_since(*since) < grace
                && !replaced.contains(&service_key(c))
        });
        let mut out = live.to_vec();
        out.extend(self.departed.values().map(|(c, _)| c.clone()));
        out.sort_by(|a, b| (a.network_id, &a.name, &a.id).cmp(&(b.network_id, &b.name, &b.id)));
        out
    }

    /// When the next departed container's grace period ends.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.departed
            .values()
            .map(|(_, since)| *since + self.grace)
            .min()
    }

    /// Whether no departed container is still routed.
    pub fn is_empty(&self) -> bool {
        self.departed.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::build::LabelSet;

    fn c(id: &str, service: &str, health: Health) -> Container {
        Container {
            network_id: NetworkId::new(2816).unwrap(),
            id: id.into(),
            name: format!("proj-{service}-1"),
            labels: LabelSet::from([(LABEL_SERVICE_NAME, service)]).into(),
            health,
            created: 0,
        }
    }

    #[test]
    fn a_recreated_container_keeps_the_route_until_its_replacement_is_routable() {
        let mut l = Lingering::new(Duration::from_secs(10));
        let t0 = Instant::now();
        let old = c("old", "web", Health::None);
        let db = c("db1", "db", Health::None);
        let live = vec![old.clone(), db.clone()];
        assert_eq!(l.effective(&[], &live, t0).len(), 2);
        // The old one stops: still routed.
        let gone = vec![db.clone()];
        let eff = l.effective(&live, &gone, t0 + Duration::from_secs(1));
        assert!(eff.iter().any(|x| x.id == "old"));
        // The new one starts but is not healthy yet: the old route stays.
        let starting = vec![db.clone(), c("new", "web", Health::Starting)];
        let eff = l.effective(&gone, &starting, t0 + Duration::from_secs(2));
        assert!(eff.iter().any(|x| x.id == "old"), "{eff:?}");
        // Healthy: the replacement takes over.
        let healthy = vec![db.clone(), c("new", "web", Health::Healthy)];
        let eff = l.effective(&starting, &healthy, t0 + Duration::from_secs(3));
        assert!(!eff.iter().any(|x| x.id == "old"));
        assert!(l.is_empty());
    }

    #[test]
    fn a_container_that_does_not_come_back_goes_after_the_grace_period() {
        let mut l = Lingering::new(Duration::from_secs(10));
        let t0 = Instant::now();
        let live = vec![c("old", "web", Health::None)];
        l.effective(&[], &live, t0);
        assert_eq!(l.effective(&live, &[], t0).len(), 1);
        assert_eq!(l.next_expiry(), Some(t0 + Duration::from_secs(10)));
        assert_eq!(l.effective(&[], &[], t0 + Duration::from_secs(9)).len(), 1);
        assert!(
            l.effective(&[], &[], t0 + Duration::from_secs(10))
                .is_empty()
        );
        assert_eq!(l.next_expiry(), None);
        // No grace: nothing lingers.
        let mut none = Lingering::new(Duration::ZERO);
        assert!(none.effective(&live, &[], t0).is_empty());
    }
}
