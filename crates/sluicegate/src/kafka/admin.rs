//! Topic creation, for the dead-letter topics the runtime creates when allowed.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::types::RDKafkaErrorCode;

use super::client::{rdkafka_config, ProducerLog};
use super::error::kafka_error;
use crate::properties::Properties;
use crate::Error;

/// What became of one topic asked for.
pub(crate) enum TopicCreation {
    /// Created now.
    Created(String),
    /// It existed already.
    Existed,
    /// The broker refused it, for the reason given.
    Refused(String, String),
}

/// Creates `topics` (name, partitions, replication factor) with an admin client of `props`,
/// waiting at most `timeout`.
pub(crate) async fn create_topics(
    props: &Properties,
    log: ProducerLog,
    topics: &[(String, i32, i32)],
    timeout: Duration,
) -> Result<Vec<TopicCreation>, Error> {
    let admin: AdminClient<ProducerLog> = rdkafka_config(props)
        .create_with_context(log)
        .map_err(Error::from_client_creation)?;
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|(name, partitions, replication)| {
            NewTopic::new(name, *partitions, TopicReplication::Fixed(*replication))
        })
        .collect();
    let options = AdminOptions::new()
        .operation_timeout(Some(timeout))
        .request_timeout(Some(timeout));
    let results = admin
        .create_topics(&new, &options)
        .await
        .map_err(kafka_error)?;
    Ok(results
        .into_iter()
        .map(|result| match result {
            Ok(topic) => TopicCreation::Created(topic),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => TopicCreation::Existed,
            Err((topic, code)) => TopicCreation::Refused(topic, code.to_string()),
        })
        .collect())
}
