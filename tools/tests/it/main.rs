//! Integration tests: the real `sluice broker` over TCP with real clients
//! (librdkafka through the `rdkafka` crate, kcat, kafka-python) and with a bare
//! protocol client for exact error codes and malformed input.

mod bench;
mod clients;
mod errors;
mod groups;
mod harness;
mod layout;
mod records;
mod robustness;
mod storage;
mod topics;
mod versions;
