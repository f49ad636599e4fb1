//! The Sluice load generator's library: it will drive any Kafka-compatible
//! broker through the protocol codec in `sluice_wire`. It holds no scenarios yet.
