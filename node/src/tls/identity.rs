//! Who a certificate speaks for: `keel://<cluster>/node/<id>` or `keel://<cluster>/host/<name>`.
//!
//! Identity is a URI name in the certificate, not its address (as SPIFFE does), so a
//! control node or host can move without a new certificate, and the role decides
//! what it may call: host managers accept only control nodes, control nodes accept
//! Raft only from control nodes of their own cluster.

use std::fmt;

use super::TlsError;

/// What a certificate's holder is.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Role {
    /// A control node (`keel server`) with this node id.
    Node(u64),
    /// A host manager (`keel host`) with this host name.
    Host(String),
}

/// A certificate's holder: its cluster and role.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Identity {
    /// Cluster name.
    pub cluster: String,
    /// Its role in the cluster.
    pub role: Role,
}

const SCHEME: &str = "keel://";

/// Whether `s` can be a cluster or host name inside the URI (no separators, no spaces).
fn is_segment(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

impl Identity {
    /// A control node's identity.
    pub fn node(cluster: &str, id: u64) -> Self {
        Self {
            cluster: cluster.into(),
            role: Role::Node(id),
        }
    }

    /// A host manager's identity.
    pub fn host(cluster: &str, name: &str) -> Self {
        Self {
            cluster: cluster.into(),
            role: Role::Host(name.into()),
        }
    }

    /// Whether this is a control node of `cluster`.
    pub fn is_node_of(&self, cluster: &str) -> bool {
        self.cluster == cluster && matches!(self.role, Role::Node(_))
    }

    /// Whether this is a host manager of `cluster`.
    pub fn is_host_of(&self, cluster: &str) -> bool {
        self.cluster == cluster && matches!(self.role, Role::Host(_))
    }

    /// Checks the names can be written into a URI and read back.
    pub fn validate(&self) -> Result<(), TlsError> {
        let ok = is_segment(&self.cluster)
            && match &self.role {
                Role::Node(id) => *id > 0,
                Role::Host(name) => is_segment(name),
            };
        if ok {
            Ok(())
        } else {
            Err(TlsError::Identity(format!(
                "{self} is not a valid identity: cluster and host names are 1-63 letters, digits, '-', '_' or '.', node ids are above 0"
            )))
        }
    }

    /// The URI written into the certificate's subject alternative names.
    pub fn uri(&self) -> String {
        self.to_string()
    }

    /// Reads a `keel://` URI; `None` for anything else.
    pub fn parse(uri: &str) -> Option<Self> {
        let rest = uri.strip_prefix(SCHEME)?;
        let mut parts = rest.split('/');
        let (cluster, kind, name) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let role = match kind {
            "node" => Role::Node(name.parse().ok()?),
            "host" => Role::Host(name.into()),
            _ => return None,
        };
        let id = Self {
            cluster: cluster.into(),
            role,
        };
        id.validate().ok().map(|()| id)
    }

    /// The identity a DER certificate carries (its one `keel://` URI name).
    pub fn of_certificate(der: &[u8]) -> Result<Self, TlsError> {
        use x509_parser::extensions::GeneralName;
        let (_, cert) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| TlsError::Identity(format!("unreadable certificate: {e}")))?;
        let names = cert
            .subject_alternative_name()
            .map_err(|e| TlsError::Identity(format!("unreadable subject alternative names: {e}")))?;
        let found: Vec<Self> = names
            .iter()
            .flat_map(|ext| ext.value.general_names.iter())
            .filter_map(|n| match n {
                GeneralName::URI(u) => Self::parse(u),
                _ => None,
            })
            .collect();
        match found.as_slice() {
            [one] => Ok(one.clone()),
            [] => Err(TlsError::Identity(
                "the certificate names no keel:// identity (issue it with `keel ca issue`)".into(),
            )),
            _ => Err(TlsError::Identity(
                "the certificate names more than one keel:// identity".into(),
            )),
        }
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.role {
            Role::Node(id) => write!(f, "{SCHEME}{}/node/{id}", self.cluster),
            Role::Host(name) => write!(f, "{SCHEME}{}/host/{name}", self.cluster),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_round_trip_and_strangers_are_refused() {
        for id in [Identity::node("prod", 3), Identity::host("keel-dev", "h1")] {
            assert_eq!(Identity::parse(&id.uri()), Some(id.clone()));
        }
        for bad in [
            "https://prod/node/1",
            "keel://prod/node/0",
            "keel://prod/node/x",
            "keel://prod/admin/1",
            "keel://prod/host/h1/extra",
            "keel:///node/1",
            "keel://a b/node/1",
        ] {
            assert_eq!(Identity::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn roles_are_told_apart_per_cluster() {
        let n = Identity::node("prod", 1);
        assert!(n.is_node_of("prod"));
        assert!(!n.is_node_of("staging"));
        assert!(!n.is_host_of("prod"));
        assert!(Identity::host("prod", "h1").is_host_of("prod"));
    }
}
