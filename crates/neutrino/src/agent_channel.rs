//! The agent channel's HTTP (in the api crate) served by the control plane.

use std::sync::Arc;

use axum::body::Bytes;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use neutrino_api::agent_channel::AgentChannel;
use neutrino_control::Control;
use neutrino_model::Result;
use neutrino_proto::containers::{Attachment, AttachmentKey, ContainerAttach, ContainerPort, Detached};
use neutrino_proto::{Heartbeat, PortStatusApplied, PortStatusReport, Registered, Registration, WatchQuery};

pub struct ControlChannel(pub Arc<Control>);

#[async_trait::async_trait]
impl AgentChannel for ControlChannel {
    fn authorize(&self, token: &str) -> bool {
        self.0.authorize(token)
    }

    async fn register(&self, host: &str, registration: Registration) -> Result<Registered> {
        self.0.register(host, registration).await
    }

    async fn heartbeat(&self, host: &str, beat: Heartbeat) -> Result<()> {
        self.0.heartbeat(host, beat).await
    }

    async fn port_status(&self, host: &str, report: PortStatusReport) -> Result<PortStatusApplied> {
        self.0.port_status(host, report).await
    }

    async fn watch(&self, host: &str, query: WatchQuery) -> Result<BoxStream<'static, Bytes>> {
        Ok(self.0.watch(host, query).await?.boxed())
    }

    async fn attach_container(&self, host: &str, attach: ContainerAttach) -> Result<ContainerPort> {
        self.0.attach_container(host, attach).await
    }

    async fn detach_container(&self, host: &str, key: AttachmentKey) -> Result<Detached> {
        Ok(Detached { port_id: self.0.detach_container(host, &key).await? })
    }

    async fn container_attachments(&self, host: &str) -> Result<Vec<Attachment>> {
        self.0.container_attachments(host).await
    }
}
