//! Admin commands: a small blocking Kafka client over the wire codec.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use anyhow::{bail, Context};
use bytes::{Buf, Bytes};
use sluice_wire::frame::{decode_response, encode_request};
use sluice_wire::kafka::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use sluice_wire::kafka::messages::*;
use sluice_wire::kafka::protocol::{Decodable, Encodable, StrBytes};
use sluice_wire::ApiVersion;

/// How long a command waits for the broker.
const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest response frame accepted.
const RESPONSE_BYTES_MAX: usize = 256 << 20;

pub struct Client {
    stream: TcpStream,
    correlation: i32,
}

impl Client {
    pub fn connect(addr: &str) -> anyhow::Result<Client> {
        let stream = TcpStream::connect(addr).with_context(|| format!("connecting to {addr}"))?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        Ok(Client {
            stream,
            correlation: 0,
        })
    }

    pub fn call<Q: Encodable, R: Decodable>(
        &mut self,
        api: ApiKey,
        version: i16,
        body: &Q,
    ) -> anyhow::Result<R> {
        self.correlation += 1;
        let header = RequestHeader::default()
            .with_request_api_key(api as i16)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation)
            .with_client_id(Some(StrBytes::from_static_str("sluice-admin")));
        let frame = encode_request(&header, body)?;
        self.stream.write_all(&frame)?;
        let mut len = [0u8; 4];
        self.stream
            .read_exact(&mut len)
            .context("reading response size")?;
        let len = i32::from_be_bytes(len);
        if len < 0 || len as usize > RESPONSE_BYTES_MAX {
            bail!("response of {len} bytes");
        }
        let mut buf = vec![0u8; len as usize];
        self.stream
            .read_exact(&mut buf)
            .context("reading response")?;
        let (correlation, response) =
            decode_response::<R>(api, ApiVersion(version), Bytes::from(buf))?;
        if correlation != self.correlation {
            bail!(
                "response for request {correlation}, expected {}",
                self.correlation
            );
        }
        Ok(response)
    }
}

fn sb(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

/// Topic and partitions of a consumer-protocol assignment.
fn assigned_partitions(assignment: &[u8]) -> Vec<(String, i32)> {
    let mut b = assignment;
    let mut out = Vec::new();
    if b.remaining() < 6 {
        return out;
    }
    b.advance(2);
    let topics = b.get_i32();
    for _ in 0..topics.clamp(0, 100_000) {
        if b.remaining() < 2 {
            break;
        }
        let len = b.get_i16().max(0) as usize;
        if b.remaining() < len + 4 {
            break;
        }
        let topic = String::from_utf8_lossy(&b[..len]).into_owned();
        b.advance(len);
        let count = b.get_i32();
        for _ in 0..count.clamp(0, 1_000_000) {
            if b.remaining() < 4 {
                break;
            }
            out.push((topic.clone(), b.get_i32()));
        }
    }
    out
}

/// `sluice group list`
pub fn group_list(bootstrap: &str) -> anyhow::Result<String> {
    let mut c = Client::connect(bootstrap)?;
    let resp: ListGroupsResponse = c.call(ApiKey::ListGroups, 4, &ListGroupsRequest::default())?;
    if resp.error_code != 0 {
        bail!("ListGroups failed with error {}", resp.error_code);
    }
    let mut out = format!("{:<40} {:<20} {}\n", "GROUP", "STATE", "PROTOCOL-TYPE");
    for g in resp.groups {
        out.push_str(&format!(
            "{:<40} {:<20} {}\n",
            g.group_id.0.as_str(),
            g.group_state.as_str(),
            g.protocol_type.as_str()
        ));
    }
    Ok(out)
}

/// `sluice group describe GROUP`: members, and per partition the committed
/// offset, the log end offset and the lag.
pub fn group_describe(bootstrap: &str, group: &str) -> anyhow::Result<String> {
    let mut c = Client::connect(bootstrap)?;
    let described: DescribeGroupsResponse = c.call(
        ApiKey::DescribeGroups,
        5,
        &DescribeGroupsRequest::default().with_groups(vec![GroupId(sb(group))]),
    )?;
    let g = described
        .groups
        .into_iter()
        .next()
        .context("no group in the response")?;
    if g.error_code != 0 {
        bail!("DescribeGroups failed with error {}", g.error_code);
    }
    let mut owner: BTreeMap<(String, i32), (String, String, String)> = BTreeMap::new();
    for m in &g.members {
        for tp in assigned_partitions(&m.member_assignment) {
            owner.insert(
                tp,
                (
                    m.member_id.to_string(),
                    m.client_id.to_string(),
                    m.client_host.to_string(),
                ),
            );
        }
    }
    let fetched: OffsetFetchResponse = c.call(
        ApiKey::OffsetFetch,
        7,
        &OffsetFetchRequest::default()
            .with_group_id(GroupId(sb(group)))
            .with_topics(None),
    )?;
    let mut committed: BTreeMap<(String, i32), i64> = BTreeMap::new();
    for t in fetched.topics {
        for p in t.partitions {
            if p.committed_offset >= 0 {
                committed.insert(
                    (t.name.0.to_string(), p.partition_index),
                    p.committed_offset,
                );
            }
        }
    }
    let mut partitions: BTreeMap<String, Vec<i32>> = BTreeMap::new();
    for (t, p) in owner.keys().chain(committed.keys()) {
        let e = partitions.entry(t.clone()).or_default();
        if !e.contains(p) {
            e.push(*p);
        }
    }
    let request = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(
            partitions
                .iter()
                .map(|(t, ps)| {
                    ListOffsetsTopic::default()
                        .with_name(TopicName(sb(t)))
                        .with_partitions(
                            ps.iter()
                                .map(|p| {
                                    ListOffsetsPartition::default()
                                        .with_partition_index(*p)
                                        .with_timestamp(-1)
                                })
                                .collect(),
                        )
                })
                .collect(),
        );
    let ends: ListOffsetsResponse = c.call(ApiKey::ListOffsets, 6, &request)?;
    let mut end: BTreeMap<(String, i32), i64> = BTreeMap::new();
    for t in ends.topics {
        for p in t.partitions {
            end.insert((t.name.0.to_string(), p.partition_index), p.offset);
        }
    }
    let mut out = format!(
        "GROUP {group} STATE {} PROTOCOL {} MEMBERS {}\n",
        g.group_state.as_str(),
        if g.protocol_data.is_empty() {
            "-"
        } else {
            g.protocol_data.as_str()
        },
        g.members.len()
    );
    out.push_str(&format!(
        "{:<30} {:>9} {:>12} {:>12} {:>8}  {:<50} {:<20} {}\n",
        "TOPIC", "PARTITION", "COMMITTED", "LOG-END", "LAG", "MEMBER", "CLIENT-ID", "HOST"
    ));
    for (topic, mut ps) in partitions {
        ps.sort();
        for p in ps {
            let key = (topic.clone(), p);
            let log_end = end.get(&key).copied().unwrap_or(-1);
            let (committed_text, lag) = match committed.get(&key) {
                Some(c) => (c.to_string(), (log_end - c).max(0).to_string()),
                None => ("-".to_string(), "-".to_string()),
            };
            let (member, client, host) =
                owner
                    .get(&key)
                    .cloned()
                    .unwrap_or(("-".into(), "-".into(), "-".into()));
            out.push_str(&format!(
                "{topic:<30} {p:>9} {committed_text:>12} {log_end:>12} {lag:>8}  {member:<50} {client:<20} {host}\n"
            ));
        }
    }
    Ok(out)
}
