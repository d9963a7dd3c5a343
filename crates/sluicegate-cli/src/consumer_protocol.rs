//! The consumer protocol's assignment, as DescribeGroups returns it for each member of a
//! consumer group: which partitions of which topics the member was given.

use serde::Serialize;

/// Partitions of one topic.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TopicPartitions {
    /// The topic name.
    pub topic: String,
    /// Its partitions, in the order the assignor gave them.
    pub partitions: Vec<i32>,
}

/// Decodes a `ConsumerProtocolAssignment` (versions 0 to 3 share this layout: an int16
/// version, an array of topic names with int32 partition arrays, then user data, which is
/// ignored). Empty bytes are an empty assignment (a member between generations has one).
/// `None` when the bytes are not an assignment.
pub fn decode_assignment(bytes: &[u8]) -> Option<Vec<TopicPartitions>> {
    if bytes.is_empty() {
        return Some(Vec::new());
    }
    let mut input = Reader { bytes };
    let _version = input.i16()?;
    let topics = input.count()?;
    let mut assignment = Vec::with_capacity(topics.min(1024));
    for _ in 0..topics {
        let name_len = usize::try_from(input.i16()?).ok()?;
        let topic = String::from_utf8(input.take(name_len)?.to_vec()).ok()?;
        let partitions = input.count()?;
        let mut list = Vec::with_capacity(partitions.min(65_536));
        for _ in 0..partitions {
            list.push(input.i32()?);
        }
        assignment.push(TopicPartitions {
            topic,
            partitions: list,
        });
    }
    Some(assignment)
}

/// Big-endian reads from the front of a byte slice; `None` past its end.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        if self.bytes.len() < n {
            return None;
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Some(head)
    }

    fn i16(&mut self) -> Option<i16> {
        Some(i16::from_be_bytes(self.take(2)?.try_into().ok()?))
    }

    fn i32(&mut self) -> Option<i32> {
        Some(i32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }

    /// An array length: a non-negative int32 (a null array counts as empty).
    fn count(&mut self) -> Option<usize> {
        match self.i32()? {
            -1 => Some(0),
            n => usize::try_from(n).ok(),
        }
    }
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
