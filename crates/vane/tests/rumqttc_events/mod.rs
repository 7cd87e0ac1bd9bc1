//! Drives a rumqttc (MQTT 3.1.1) event loop in its own task and hands its incoming packets,
//! or the error that ended it, to the test through a channel.

use rumqttc::{Event, EventLoop, Packet};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};
use tokio::task::JoinHandle;

/// Polls `eventloop` until it fails or the receiver is dropped; the error ends the stream as
/// its last item.
pub fn spawn(
    mut eventloop: EventLoop,
) -> (UnboundedReceiver<Result<Packet, String>>, JoinHandle<()>) {
    let (tx, rx) = unbounded_channel();
    let task = tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(p)) => {
                    if tx.send(Ok(p)).is_err() {
                        break;
                    }
                }
                Ok(Event::Outgoing(_)) => {}
                Err(e) => {
                    let _ = tx.send(Err(e.to_string()));
                    break;
                }
            }
        }
    });
    (rx, task)
}
