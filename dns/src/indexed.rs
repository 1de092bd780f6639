//! hickory's in-memory zone, with misses answered in O(log n).
//!
//! hickory-server 0.26's `InMemoryZoneHandler` decides between NXDOMAIN and
//! NODATA by scanning every record of the zone, so each miss costs time in
//! proportion to the number of databases. Records are kept in canonical DNS
//! order (RFC 4034 §6.1), where a name's descendants follow it directly; so
//! one ordered lookup says whether a name exists (or is an empty
//! non-terminal). Hits, ANY, transfers and everything else go to hickory
//! unchanged; only the miss classification is ours, and it gives hickory's
//! own answers (`NameExists` → NODATA, NXDOMAIN inside the zone).

use std::sync::Arc;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{LowerName, RecordType, RrKey, TSigResponseContext};
use hickory_server::server::{Request, RequestInfo};
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{
    AuthLookup, AxfrPolicy, LookupControlFlow, LookupError, LookupOptions, ZoneHandler, ZoneTransfer, ZoneType,
};

/// A zone handler that delegates to hickory's, answering misses from an ordered lookup.
pub struct IndexedZone {
    inner: Arc<InMemoryZoneHandler>,
}

impl IndexedZone {
    /// Wrap `inner`.
    pub fn new(inner: Arc<InMemoryZoneHandler>) -> Self {
        Self { inner }
    }

    /// `None` if hickory should answer; else the miss to report.
    async fn miss(&self, name: &LowerName, rtype: RecordType) -> Option<LookupError> {
        if matches!(rtype, RecordType::ANY | RecordType::AXFR | RecordType::IXFR) || !self.inner.origin().zone_of(name)
        {
            return None;
        }
        let records = self.inner.records().await;
        if records.contains_key(&RrKey::new(name.clone(), rtype))
            || records.contains_key(&RrKey::new(name.clone(), RecordType::CNAME))
        {
            return None;
        }
        let first_at_or_below = records
            .range(RrKey::new(name.clone(), RecordType::Unknown(0))..)
            .next()
            .map(|(k, _)| k.name());
        Some(match first_at_or_below {
            Some(n) if n == name || name.zone_of(n) => LookupError::NameExists,
            _ => LookupError::from(ResponseCode::NXDomain),
        })
    }
}

#[async_trait::async_trait]
impl ZoneHandler for IndexedZone {
    fn zone_type(&self) -> ZoneType {
        self.inner.zone_type()
    }

    fn axfr_policy(&self) -> AxfrPolicy {
        self.inner.axfr_policy()
    }

    fn origin(&self) -> &LowerName {
        self.inner.origin()
    }

    async fn lookup(
        &self,
        name: &LowerName,
        rtype: RecordType,
        request_info: Option<&RequestInfo<'_>>,
        lookup_options: LookupOptions,
    ) -> LookupControlFlow<AuthLookup> {
        match self.miss(name, rtype).await {
            Some(e) => LookupControlFlow::Continue(Err(e)),
            None => self.inner.lookup(name, rtype, request_info, lookup_options).await,
        }
    }

    async fn search(
        &self,
        request: &Request,
        lookup_options: LookupOptions,
    ) -> (LookupControlFlow<AuthLookup>, Option<TSigResponseContext>) {
        let Ok(info) = request.request_info() else {
            return self.inner.search(request, lookup_options).await;
        };
        let (name, rtype) = (info.query.name(), info.query.query_type());
        match self.miss(name, rtype).await {
            Some(e) => (LookupControlFlow::Continue(Err(e)), None),
            None => self.inner.search(request, lookup_options).await,
        }
    }

    async fn nsec_records(&self, name: &LowerName, lookup_options: LookupOptions) -> LookupControlFlow<AuthLookup> {
        self.inner.nsec_records(name, lookup_options).await
    }

    async fn zone_transfer(
        &self,
        request: &Request,
        lookup_options: LookupOptions,
        now: u64,
    ) -> Option<(Result<ZoneTransfer, LookupError>, Option<TSigResponseContext>)> {
        self.inner.zone_transfer(request, lookup_options, now).await
    }
}
