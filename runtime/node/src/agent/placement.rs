//! Actors are placed by the head: before leasing an actor's worker, the agent asks the head
//! which node it goes on (`Head.PlaceActor`), so that placements made at once from several
//! nodes spread by the head's freshest view instead of each node's own (ACTOR_PLACED, with
//! why, is recorded by the head). Without a head to ask (a lone node), or when it does not
//! answer in time, the agent places the actor as it places tasks, and says so.
//!
//! Actor names are the cluster's too: claimed, looked up and released at the head
//! (`Head.ActorNames`), so a name is unique across nodes and found from any of them.

use std::time::Duration;

use rayr_proto::head_client::HeadClient;
use rayr_proto::{ActorName, ActorNameReply, ActorNamesRequest, LeaseReply, PlaceActorRequest};

use super::{Agent, id_of};
use crate::resources::Resources;

/// How long a lease waits for the head's answer before placing the actor itself.
const PLACE_TIMEOUT: Duration = Duration::from_secs(2);

/// A client of the head at `head` (HOST:PORT).
async fn head_client(head: &str) -> Result<HeadClient<tonic::transport::Channel>, String> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{head}"))
        .map_err(|e| e.to_string())?
        .connect_timeout(PLACE_TIMEOUT)
        .connect()
        .await
        .map_err(|e| e.to_string())?;
    Ok(HeadClient::new(channel))
}

/// What the head decided for an actor's lease.
pub(super) enum Placement {
    /// On this node: lease here.
    Here,
    /// On another: ask its agent.
    There(LeaseReply),
    /// The head could not be asked: place it as a task.
    Unknown(String),
}

impl Agent {
    /// Asks the head to `op` ("claim", "lookup", "release") an actor's name: None on a lone
    /// node (its names are this agent's alone), an error when the head could not answer.
    pub(super) fn head_names(&self, op: &str, actor: &ActorName) -> Option<Result<ActorNameReply, String>> {
        let (Some(head), Some(transfer)) = (self.head_address.lock().clone(), self.transfer.get()) else {
            return None;
        };
        let request = ActorNamesRequest { op: op.into(), actor: Some(actor.clone()), node_id: self.cfg.node_id.to_vec() };
        Some(transfer.rt.block_on(async {
            tokio::time::timeout(PLACE_TIMEOUT, async {
                head_client(&head).await?.actor_names(request).await.map(|r| r.into_inner()).map_err(|s| s.message().to_string())
            })
            .await
            .map_err(|_| format!("the head at {head} did not answer within {} s", PLACE_TIMEOUT.as_secs()))?
        }))
    }

    pub(super) fn place_actor(&self, demand: &Resources, actor: &[u8], task: &[u8]) -> Placement {
        let (Some(head), Some(transfer)) = (self.head_address.lock().clone(), self.transfer.get()) else {
            return Placement::Unknown("this node has no head to ask".into());
        };
        let request = PlaceActorRequest {
            actor_id: actor.to_vec(),
            task_id: task.to_vec(),
            demand: demand.clone(),
            requester_node: self.cfg.node_id.to_vec(),
        };
        let asked = transfer.rt.block_on(async {
            tokio::time::timeout(PLACE_TIMEOUT, async {
                head_client(&head).await?.place_actor(request).await.map(|r| r.into_inner()).map_err(|s| s.message().to_string())
            })
            .await
            .map_err(|_| format!("no answer within {} s", PLACE_TIMEOUT.as_secs()))?
        });
        let reply = match asked {
            Ok(r) => r,
            Err(e) => return Placement::Unknown(format!("the head at {head} could not place it: {e}")),
        };
        if !reply.error.is_empty() {
            return Placement::Unknown(reply.error);
        }
        match id_of(&reply.node_id) {
            Some(n) if n == self.cfg.node_id => Placement::Here,
            Some(n) => Placement::There(LeaseReply { spill_to: reply.agent_socket, spill_node: n.to_vec(), ..Default::default() }),
            None => Placement::Unknown("the head named no node".into()),
        }
    }
}
