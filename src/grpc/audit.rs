//! `vnid.v1.AuditService`: the citizen's access history, for operators.

use std::sync::Arc;
use std::time::Instant;

use tonic::{Request, Response, Status};

use crate::audit::history::{AccessHistory, HistoryQuery};
use crate::grpc::caller::Callers;
use crate::grpc::convert::history_response;
use crate::grpc::respond;
use crate::pb;
use crate::pb::audit_service_server::AuditService;

pub struct AuditApi {
    history: Arc<AccessHistory>,
    callers: Arc<Callers>,
}

impl AuditApi {
    pub fn new(history: Arc<AccessHistory>, callers: Arc<Callers>) -> Self {
        Self { history, callers }
    }
}

#[tonic::async_trait]
impl AuditService for AuditApi {
    async fn list_access_history(
        &self,
        request: Request<pb::ListAccessHistoryRequest>,
    ) -> Result<Response<pb::ListAccessHistoryResponse>, Status> {
        let started = Instant::now();
        let result = async {
            let operator = self.callers.operator(&request)?;
            let door = crate::grpc::door_of(&request);
            let query = HistoryQuery {
                door,
                ..HistoryQuery::try_from(request.into_inner())?
            };
            let page = self.history.list(&operator, query).await?;
            Ok(history_response(page, |id| self.callers.name_of(id)))
        }
        .await;
        respond(result, started)
    }
}
