//! Placement: which host runs a new instance, and on which port. A pure
//! function of the admin state, run inside apply so two creates can never
//! race for the same slot or port.

use std::collections::BTreeSet;

use super::AdminState;
use crate::command::Rejection;
use crate::records::HostHealth;

/// The first port handed out on every host; ports stay with a database for its life.
pub const FIRST_PORT: u16 = 5432;

/// Instances a host takes before it has reported its capacity.
const DEFAULT_SLOTS: u32 = 16;

impl AdminState {
    /// Pick a host (in `zone` if given; else the least loaded) with a free slot, and a free port on it.
    pub(crate) fn place(&self, zone: Option<&str>) -> Result<(String, u16), Rejection> {
        self.place_avoiding(zone, None, None)
    }

    /// As [`AdminState::place`], never on `avoid` (a failed instance's host), and on
    /// `port` if it is free on the chosen host.
    pub(crate) fn place_avoiding(
        &self,
        zone: Option<&str>,
        avoid: Option<&str>,
        port: Option<u16>,
    ) -> Result<(String, u16), Rejection> {
        self.place_beside(zone, avoid.as_slice(), port)
    }

    /// As [`AdminState::place`], on none of the hosts `avoid` (a failed instance's, or
    /// those a database's other instances use), and on `port` if it is free there.
    pub(crate) fn place_beside(
        &self,
        zone: Option<&str>,
        avoid: &[&str],
        port: Option<u16>,
    ) -> Result<(String, u16), Rejection> {
        if let Some(zone) = zone {
            if !self.hosts.values().any(|h| h.zone == zone) {
                let zones: BTreeSet<&str> = self.hosts.values().map(|h| h.zone.as_str()).collect();
                return Err(Rejection::Conflict {
                    message: format!(
                        "zone {zone:?} has no hosts; zones with hosts: {}",
                        if zones.is_empty() {
                            "none (register hosts with `keel hosts add`)".to_string()
                        } else {
                            zones.into_iter().collect::<Vec<_>>().join(", ")
                        }
                    ),
                });
            }
        }
        let host = self.least_loaded(&|z| zone.is_none_or(|want| z == want), avoid).ok_or_else(|| {
            Rejection::Conflict {
                message: match (zone, (!avoid.is_empty()).then(|| avoid.join(", "))) {
                    (Some(z), Some(a)) => format!("no capacity in zone {z:?} beside host {a}: every other host there is full, draining or unreachable; add a host to the zone"),
                    (None, Some(a)) => format!("no capacity beside host {a}: every other host is full, draining or unreachable; add or drain-back a host"),
                    (Some(z), None) => format!("no capacity in zone {z:?}: every host there is full, draining or unreachable"),
                    (None, None) => "no capacity: every host is full, draining or unreachable; add or drain-back a host".into(),
                },
            }
        })?;
        self.port_on(host, port)
    }

    /// A host for a Multi-AZ database's standby: in any zone but its primary's
    /// (`primary_zone`), on `port` (the primary's, so a failover keeps it) if free there.
    pub fn place_standby(&self, primary_zone: &str, port: Option<u16>) -> Result<(String, u16), Rejection> {
        let host = self.least_loaded(&|z| z != primary_zone, &[]).ok_or_else(|| {
            let zones: BTreeSet<&str> = self
                .hosts
                .values()
                .map(|h| h.zone.as_str())
                .filter(|z| *z != primary_zone)
                .collect();
            Rejection::Conflict {
                message: if zones.is_empty() {
                    format!("a Multi-AZ database needs hosts in a second zone, and every host is in zone {primary_zone:?}, the primary's; add a host in another zone")
                } else {
                    format!(
                        "no capacity for a standby outside zone {primary_zone:?}: every host in {} is full, draining or unreachable",
                        zones.into_iter().collect::<Vec<_>>().join(", ")
                    )
                },
            }
        })?;
        self.port_on(host, port)
    }

    /// The least loaded host with a free slot in a zone `in_zone` accepts, never `avoid`:
    /// one the monitor has seen healthy, else one not probed yet.
    fn least_loaded(&self, in_zone: &dyn Fn(&str) -> bool, avoid: &[&str]) -> Option<String> {
        let load = |name: &str| self.instances.values().filter(|i| i.host == name).count() as u32;
        let eligible = |healthy_only: bool| {
            self.hosts
                .values()
                .filter(|h| in_zone(&h.zone))
                .filter(|h| !h.draining && !avoid.contains(&h.name.as_str()))
                .filter(|h| match h.health {
                    HostHealth::Healthy => true,
                    HostHealth::Unknown => !healthy_only,
                    HostHealth::Unreachable => false,
                })
                .filter(|h| {
                    let slots = if h.capacity.instance_slots == 0 {
                        DEFAULT_SLOTS
                    } else {
                        h.capacity.instance_slots
                    };
                    load(&h.name) < slots
                })
                .min_by_key(|h| (load(&h.name), h.name.clone()))
                .map(|h| h.name.clone())
        };
        eligible(true).or_else(|| eligible(false))
    }

    /// `host` and `port` on it if that is free there, else its lowest free port.
    fn port_on(&self, host: String, port: Option<u16>) -> Result<(String, u16), Rejection> {
        let used: BTreeSet<u16> = self
            .instances
            .values()
            .filter(|i| i.host == host)
            .map(|i| i.port)
            .collect();
        let port = port
            .filter(|p| !used.contains(p))
            .or_else(|| (FIRST_PORT..=u16::MAX).find(|p| !used.contains(p)))
            .ok_or_else(|| Rejection::Conflict {
                message: format!("host {host} has no free port"),
            })?;
        Ok((host, port))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::{Host, Instance};

    fn state(hosts: &[(&str, &str, HostHealth)]) -> AdminState {
        let mut s = AdminState::default();
        for (name, zone, health) in hosts {
            s.hosts.insert(
                name.to_string(),
                Host {
                    name: name.to_string(),
                    zone: zone.to_string(),
                    health: *health,
                    ..Host::default()
                },
            );
        }
        s
    }

    fn put(s: &mut AdminState, host: &str, port: u16) {
        let id = format!("{host}-{port}");
        s.instances.insert(
            id.clone(),
            Instance {
                id,
                host: host.into(),
                port,
                ..Instance::default()
            },
        );
    }

    #[test]
    fn least_loaded_healthy_host_and_lowest_free_port() {
        let mut s = state(&[("h1", "a", HostHealth::Healthy), ("h2", "b", HostHealth::Healthy)]);
        put(&mut s, "h1", FIRST_PORT);
        assert_eq!(s.place(None).unwrap(), ("h2".into(), FIRST_PORT));
        assert_eq!(s.place(Some("a")).unwrap(), ("h1".into(), FIRST_PORT + 1));
        put(&mut s, "h1", FIRST_PORT + 2);
        assert_eq!(
            s.place(Some("a")).unwrap(),
            ("h1".into(), FIRST_PORT + 1),
            "gaps are reused"
        );
    }

    #[test]
    fn unknown_zone_and_no_capacity_are_explained() {
        let mut s = state(&[("h1", "a", HostHealth::Unreachable)]);
        let e = s.place(Some("z")).unwrap_err().to_string();
        assert!(e.contains("zone \"z\" has no hosts") && e.contains("a"), "{e}");
        assert!(s.place(None).unwrap_err().to_string().contains("no capacity"));
        s.hosts.get_mut("h1").unwrap().health = HostHealth::Unknown;
        assert_eq!(
            s.place(None).unwrap().0,
            "h1",
            "unprobed hosts are used when nothing better exists"
        );
        s.hosts.get_mut("h1").unwrap().draining = true;
        assert!(s.place(None).is_err(), "draining hosts take no new instances");
        s.hosts.get_mut("h1").unwrap().draining = false;
        s.hosts.get_mut("h1").unwrap().capacity.instance_slots = 1;
        put(&mut s, "h1", FIRST_PORT);
        assert!(s.place(None).is_err(), "full hosts take no new instances");
    }
}
