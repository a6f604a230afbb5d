//! Replica ratio (no mesh, no gateway): the replica counts of the stable and candidate
//! Deployments behind one Service are the split, set by the workloads adapter; there is no route
//! to write, nothing to restore, and no mirror or header match to offer.

use kube::Client;

use super::Split;
use crate::api::ModelRollout;
use crate::error::Error;

/// Nothing to route: the split is the pods (see `workloads`).
pub(super) async fn apply(_: &Client, _: &ModelRollout, _: &Split) -> Result<super::Generations, Error> {
    Ok(vec![])
}
