//! `sink.reply_to`: what the sink answers for a message (the HTTP response's body, an exec
//! worker's `"value"`) written to a topic, keyed by the message's key, with the message's
//! topic, partition and offset in headers. The message counts as done only once the broker has
//! acknowledged its reply, so a crash in between re-delivers it: a reply is written at least
//! once. With `sink.transactional_id` (the library's exactly-once mode) replies are written in
//! the transaction that commits their messages' offsets: `read_committed` readers see each
//! message's reply once, whatever the retries, crashes and restarts.

use sluicegate::{HandlerError, Message, Output, OutputRecord};

/// Header naming the topic of the message a reply answers.
pub const SOURCE_TOPIC: &str = "sluicegate-source-topic";
/// Header naming its partition.
pub const SOURCE_PARTITION: &str = "sluicegate-source-partition";
/// Header naming its offset.
pub const SOURCE_OFFSET: &str = "sluicegate-source-offset";

/// Writes replies to one topic.
#[derive(Clone)]
pub struct Replies {
    output: Output,
    topic: String,
}

impl Replies {
    pub fn new(output: Output, topic: String) -> Self {
        Replies { output, topic }
    }

    /// Writes `reply` for `message` and waits for the broker's acknowledgement.
    pub async fn write(&self, message: &Message, reply: Vec<u8>) -> Result<(), HandlerError> {
        let mut record = OutputRecord::to(self.topic.clone())
            .payload(reply)
            .header(SOURCE_TOPIC, message.topic().to_string())
            .header(SOURCE_PARTITION, message.partition().to_string())
            .header(SOURCE_OFFSET, message.offset().to_string());
        if let Some(key) = message.key() {
            record = record.key(key.to_vec());
        }
        self.output.send(record).await?;
        Ok(())
    }
}
