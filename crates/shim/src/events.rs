//! Events to containerd, packed here. The library's publisher names each
//! event's type through protobuf reflection, whose descriptors, built on first
//! use, kept about 350 KiB of every shim's heap for its whole life. The names
//! are known: every event the shim sends is in the `containerd.events`
//! package, and the generated code writes the message itself.

use containerd_shim::protos::protobuf::well_known_types::any::Any;
use containerd_shim::protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim::protos::protobuf::Message;
use containerd_shim::protos::shim::event::Envelope;
use containerd_shim::protos::shim::events::ForwardRequest;
use containerd_shim::protos::ttrpc::context::Context;
use containerd_shim::protos::{Client, EventsClient};

/// An event on its way: its topic and the message, packed.
pub struct Event {
    topic: &'static str,
    event: Any,
}

impl Event {
    /// Event `m` of `containerd.events` on `topic`.
    pub fn new<M: Message>(topic: &'static str, m: &M) -> Event {
        let mut event = Any::new();
        event.type_url = format!("containerd.events.{}", M::NAME);
        // (Writing a generated message to memory cannot fail.)
        event.value = m.write_to_bytes().unwrap_or_default();
        Event { topic, event }
    }

    /// The topic, for the log.
    pub fn topic(&self) -> &'static str {
        self.topic
    }
}

/// containerd's event service, over its ttrpc socket.
pub struct Publisher {
    client: EventsClient,
    namespace: String,
}

impl Publisher {
    /// Connects to containerd's ttrpc address.
    pub fn connect(address: &str, namespace: &str) -> Result<Publisher, String> {
        let fd = containerd_shim::util::connect(address).map_err(|e| e.to_string())?;
        let client = Client::new(fd).map_err(|e| e.to_string())?;
        Ok(Publisher { client: EventsClient::new(client), namespace: namespace.to_string() })
    }

    /// Sends `e`, stamped now.
    pub fn publish(&self, e: Event) -> Result<(), String> {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let mut at = Timestamp::new();
        at.seconds = now.as_secs() as i64;
        at.nanos = now.subsec_nanos() as i32;
        let mut envelope = Envelope::new();
        envelope.set_topic(e.topic.to_string());
        envelope.set_namespace(self.namespace.clone());
        envelope.set_timestamp(at);
        envelope.set_event(e.event);
        let mut req = ForwardRequest::new();
        req.set_envelope(envelope);
        self.client.forward(Context::default(), &req).map(drop).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use containerd_shim::protos::events::task::TaskExit;
    use containerd_shim::protos::protobuf::MessageDyn;

    #[test]
    fn an_event_is_packed_as_reflection_would_pack_it() {
        let exit = TaskExit { container_id: "c1".into(), pid: 42, exit_status: 7, ..Default::default() };
        let e = Event::new("/tasks/exit", &exit);
        assert_eq!(e.topic(), "/tasks/exit");
        assert_eq!(e.event.type_url, exit.descriptor_dyn().full_name());
        assert_eq!(TaskExit::parse_from_bytes(&e.event.value).expect("parse"), exit);
    }
}
