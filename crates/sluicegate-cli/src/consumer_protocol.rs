//! The consumer protocol's assignment, as DescribeGroups returns it for each member of a
//! consumer group: which partitions of which topics the member was given.

use bytes::{Buf as _, Bytes};
use kafka_protocol::messages::ConsumerProtocolAssignment;
use kafka_protocol::protocol::{Decodable as _, Message as _};
use serde::Serialize;

/// Partitions of one topic.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TopicPartitions {
    /// The topic name.
    pub topic: String,
    /// Its partitions, in the order the assignor gave them.
    pub partitions: Vec<i32>,
}

/// Decodes a `ConsumerProtocolAssignment` with the `kafka-protocol` crate: an int16 version,
/// then the assignment in that version's layout (user data ignored). Empty bytes are an empty
/// assignment (a member between generations has one). `None` when the bytes are not an
/// assignment.
pub fn decode_assignment(bytes: &[u8]) -> Option<Vec<TopicPartitions>> {
    if bytes.is_empty() {
        return Some(Vec::new());
    }
    let mut buf = Bytes::copy_from_slice(bytes);
    let version = buf.try_get_i16().ok()?;
    // Versions newer than the crate knows keep the older layout and add tagged fields at the
    // end, which the newest known version reads past.
    let known = ConsumerProtocolAssignment::VERSIONS;
    let version = version.clamp(known.min, known.max);
    let assignment = ConsumerProtocolAssignment::decode(&mut buf, version).ok()?;
    Some(
        assignment
            .assigned_partitions
            .into_iter()
            .map(|tp| TopicPartitions {
                topic: tp.topic.0.to_string(),
                partitions: tp.partitions,
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bytes of an assignment of `topics`, as a Kafka consumer encodes it (version 1, with
    /// `user_data` bytes).
    fn encode(topics: &[(&str, &[i32])], user_data: &[u8]) -> Vec<u8> {
        let mut out = 1i16.to_be_bytes().to_vec();
        out.extend((topics.len() as i32).to_be_bytes());
        for (topic, partitions) in topics {
            out.extend((topic.len() as i16).to_be_bytes());
            out.extend(topic.as_bytes());
            out.extend((partitions.len() as i32).to_be_bytes());
            for p in *partitions {
                out.extend(p.to_be_bytes());
            }
        }
        out.extend((user_data.len() as i32).to_be_bytes());
        out.extend(user_data);
        out
    }

    #[test]
    fn an_assignment_decodes_to_its_topics_and_partitions() {
        let bytes = encode(&[("orders", &[0, 2]), ("payments", &[1])], b"sticky");
        assert_eq!(
            decode_assignment(&bytes),
            Some(vec![
                TopicPartitions {
                    topic: "orders".into(),
                    partitions: vec![0, 2],
                },
                TopicPartitions {
                    topic: "payments".into(),
                    partitions: vec![1],
                },
            ])
        );
    }

    #[test]
    fn empty_bytes_are_an_empty_assignment_and_truncated_bytes_none() {
        assert_eq!(decode_assignment(&[]), Some(Vec::new()));
        assert_eq!(decode_assignment(&encode(&[], &[])), Some(Vec::new()));
        let bytes = encode(&[("orders", &[0, 2])], &[]);
        // Cut inside the partition array.
        assert_eq!(decode_assignment(&bytes[..bytes.len() - 6]), None);
        // A negative topic name length.
        let mut bad = 0i16.to_be_bytes().to_vec();
        bad.extend(1i32.to_be_bytes());
        bad.extend((-5i16).to_be_bytes());
        assert_eq!(decode_assignment(&bad), None);
    }
}
