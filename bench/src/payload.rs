//! Message contents: values, keys and the tracking header.
//!
//! Every message carries a record header named [`TRACK_HEADER`] holding its
//! producer-unique sequence number and the time it was meant to be sent, so a
//! consumer can measure end-to-end latency and `--verify` can account for every
//! message without trusting the broker's offsets. The header is not counted as
//! payload: reported bytes are key + value.
//!
//! Generation must not be the bottleneck: values are slices of pools built
//! once per producer, so making a message costs a few random numbers and a
//! reference count, not a copy.

use bytes::{BufMut, Bytes, BytesMut};

use crate::config::{KeyDist, PayloadKind, SizeRange, Workload};

/// Name of the record header carrying sequence number and intended send time.
pub const TRACK_HEADER: &str = "sb";
/// Bytes of the tracking header's value: sequence (u64) and time (u64), big-endian.
pub const TRACK_BYTES: usize = 16;
/// Bytes of the random value pool each producer slices values from.
const RANDOM_POOL_BYTES: usize = 4 << 20;
/// Text lines pre-made for the log and metric payloads.
const LINE_POOL_COUNT: usize = 4096;
/// Bits of a sequence number that count messages of one producer; the
/// producer index sits above them.
pub const SEQ_PRODUCER_SHIFT: u32 = 40;

/// SplitMix64's finaliser: a cheap, well-mixed 64-bit hash.
pub fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A small seeded generator (SplitMix64): reproducible runs without a crate.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix64(self.0)
    }

    /// Uniform in `0..n` (n > 0), by multiply-shift.
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Zipf-distributed ranks in `0..n` with exponent 1.1, by inverting a
/// precomputed CDF (n is at most the key space, checked at resolution).
#[derive(Debug)]
pub struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    const EXPONENT: f64 = 1.1;

    pub fn new(n: u64) -> Zipf {
        let mut cdf = Vec::with_capacity(n as usize);
        let mut total = 0.0;
        for rank in 1..=n {
            total += 1.0 / (rank as f64).powf(Self::EXPONENT);
            cdf.push(total);
        }
        for c in &mut cdf {
            *c /= total;
        }
        Zipf { cdf }
    }

    pub fn sample(&self, rng: &mut Rng) -> u64 {
        let u = rng.unit();
        self.cdf.partition_point(|&c| c < u).min(self.cdf.len() - 1) as u64
    }
}

/// One message as the generator makes it.
#[derive(Debug, Clone)]
pub struct Message {
    pub key: Option<Bytes>,
    pub value: Bytes,
}

impl Message {
    pub fn payload_bytes(&self) -> usize {
        self.key.as_ref().map_or(0, |k| k.len()) + self.value.len()
    }
}

/// Makes the messages of one producer.
#[derive(Debug)]
pub struct Generator {
    rng: Rng,
    kind: PayloadKind,
    size: SizeRange,
    keys: KeyDist,
    key_space: u64,
    zipf: Option<Zipf>,
    random_pool: Bytes,
    lines: Vec<Bytes>,
    key_names: Vec<Bytes>,
}

const HOSTS: [&str; 8] = [
    "web", "api", "db", "cache", "queue", "auth", "search", "edge",
];
const REGIONS: [&str; 4] = ["eu-west-1", "us-east-1", "ap-south-1", "sa-east-1"];
const LEVELS: [&str; 5] = ["INFO", "INFO", "INFO", "WARN", "ERROR"];
const PATHS: [&str; 6] = [
    "/api/v1/orders",
    "/api/v1/users/me",
    "/healthz",
    "/static/app.js",
    "/api/v2/search?q=disk",
    "/login",
];
const METRICS: [&str; 6] = [
    "cpu_usage_percent",
    "mem_used_bytes",
    "disk_io_time_ms",
    "net_rx_bytes",
    "http_requests_total",
    "gc_pause_seconds",
];

fn host_name(i: u64) -> String {
    format!("{}-{:03}", HOSTS[(i % HOSTS.len() as u64) as usize], i)
}

impl Generator {
    pub fn new(w: &Workload, seed: u64) -> Generator {
        let mut rng = Rng::new(seed);
        let zipf = (w.keys == KeyDist::Zipf).then(|| Zipf::new(w.key_space));
        let pool_bytes = RANDOM_POOL_BYTES.max(w.size.bytes_max * 2);
        let random_pool = match w.payload {
            PayloadKind::Random => {
                let mut b = BytesMut::with_capacity(pool_bytes);
                while b.len() + 8 <= pool_bytes {
                    b.put_u64(rng.next_u64());
                }
                b.resize(pool_bytes, 0);
                b.freeze()
            }
            _ => Bytes::new(),
        };
        let lines = match w.payload {
            PayloadKind::Random => Vec::new(),
            PayloadKind::LogLines => (0..LINE_POOL_COUNT)
                .map(|_| Bytes::from(log_line(&mut rng, w.size)))
                .collect(),
            PayloadKind::MetricSamples => (0..LINE_POOL_COUNT)
                .map(|_| Bytes::from(metric_line(&mut rng, w.size)))
                .collect(),
        };
        // Keys are names a real system would use: hosts for logs, series for
        // metrics, opaque ids otherwise. Precomputed for small key spaces.
        let key_names = if w.keys != KeyDist::None && w.key_space <= 100_000 {
            (0..w.key_space)
                .map(|i| Bytes::from(key_name(w.payload, i)))
                .collect()
        } else {
            Vec::new()
        };
        Generator {
            rng,
            kind: w.payload,
            size: w.size,
            keys: w.keys,
            key_space: w.key_space,
            zipf,
            random_pool,
            lines,
            key_names,
        }
    }

    fn key(&mut self) -> Option<Bytes> {
        let index = match self.keys {
            KeyDist::None => return None,
            KeyDist::Random => self.rng.below(self.key_space),
            KeyDist::Zipf => self
                .zipf
                .as_ref()
                .expect("zipf table")
                .sample(&mut self.rng),
        };
        Some(match self.key_names.get(index as usize) {
            Some(k) => k.clone(),
            None => Bytes::from(key_name(self.kind, index)),
        })
    }

    pub fn make(&mut self) -> Message {
        let key = self.key();
        let value = match self.kind {
            PayloadKind::Random => {
                let span = (self.size.bytes_max - self.size.bytes_min) as u64;
                let len = self.size.bytes_min + self.rng.below(span + 1) as usize;
                let start = self.rng.below((self.random_pool.len() - len + 1) as u64) as usize;
                self.random_pool.slice(start..start + len)
            }
            PayloadKind::LogLines | PayloadKind::MetricSamples => {
                let i = self.rng.below(self.lines.len() as u64) as usize;
                self.lines[i].clone()
            }
        };
        Message { key, value }
    }
}

fn key_name(kind: PayloadKind, i: u64) -> String {
    match kind {
        PayloadKind::LogLines => host_name(i),
        PayloadKind::MetricSamples => format!(
            "{}{{host=\"{}\",region=\"{}\"}}",
            METRICS[(i % METRICS.len() as u64) as usize],
            host_name(i / METRICS.len() as u64),
            REGIONS[(i % REGIONS.len() as u64) as usize]
        ),
        PayloadKind::Random => format!("key-{i:012}"),
    }
}

/// Pads or cuts a text line to a length drawn from `size`.
fn fit(mut line: String, rng: &mut Rng, size: SizeRange) -> Vec<u8> {
    let span = (size.bytes_max - size.bytes_min) as u64;
    let len = size.bytes_min + rng.below(span + 1) as usize;
    const FILLER: &str = " user_agent=\"Mozilla/5.0 (X11; Linux x86_64) sluice-bench\" trace=";
    while line.len() < len {
        line.push_str(FILLER);
        line.push_str(&format!("{:016x}", rng.next_u64()));
    }
    let mut bytes = line.into_bytes();
    bytes.truncate(len);
    bytes
}

fn log_line(rng: &mut Rng, size: SizeRange) -> Vec<u8> {
    let line = format!(
        "2026-11-22T10:{:02}:{:02}.{:03}Z {} {} pid={} method=GET path={} status={} duration_ms={} bytes={}",
        rng.below(60),
        rng.below(60),
        rng.below(1000),
        LEVELS[rng.below(LEVELS.len() as u64) as usize],
        host_name(rng.below(500)),
        1000 + rng.below(30_000),
        PATHS[rng.below(PATHS.len() as u64) as usize],
        [200, 200, 200, 201, 304, 404, 500][rng.below(7) as usize],
        rng.below(900),
        rng.below(200_000),
    );
    fit(line, rng, size)
}

fn metric_line(rng: &mut Rng, size: SizeRange) -> Vec<u8> {
    let line = format!(
        "{},host={},region={} value={:.3} {}",
        METRICS[rng.below(METRICS.len() as u64) as usize],
        host_name(rng.below(1000)),
        REGIONS[rng.below(REGIONS.len() as u64) as usize],
        rng.unit() * 1000.0,
        1_795_000_000_000u64 + rng.below(1_000_000),
    );
    fit(line, rng, size)
}

/// The tracking header's value.
pub fn track_value(seq: u64, intended_ns: u64) -> [u8; TRACK_BYTES] {
    let mut out = [0u8; TRACK_BYTES];
    out[..8].copy_from_slice(&seq.to_be_bytes());
    out[8..].copy_from_slice(&intended_ns.to_be_bytes());
    out
}

/// Reads a tracking header's value back: sequence and intended send time.
pub fn parse_track(value: &[u8]) -> Option<(u64, u64)> {
    if value.len() != TRACK_BYTES {
        return None;
    }
    let seq = u64::from_be_bytes(value[..8].try_into().ok()?);
    let ns = u64::from_be_bytes(value[8..].try_into().ok()?);
    Some((seq, ns))
}

/// A message's contribution to the run checksum: its sequence number with
/// the CRC32C of its key and value, so a consumer that sees the same set of
/// messages with the same contents arrives at the same sum.
pub fn digest(seq: u64, key: Option<&[u8]>, value: &[u8]) -> u64 {
    let key_crc = key.map_or(0xffff_ffff, crc32c::crc32c) as u64;
    let value_crc = crc32c::crc32c(value) as u64;
    mix64(seq ^ mix64((key_crc << 32) | value_crc))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::BenchArgs;

    #[test]
    fn zipf_prefers_low_ranks_and_stays_in_range() {
        let z = Zipf::new(100);
        let mut rng = Rng::new(7);
        let mut counts = [0u32; 100];
        for _ in 0..100_000 {
            counts[z.sample(&mut rng) as usize] += 1;
        }
        assert!(counts[0] > counts[1]);
        assert!(counts[1] > counts[10]);
        assert!(counts[10] > counts[99]);
    }

    #[test]
    fn generated_sizes_and_keys_follow_the_workload() {
        for preset in ["omb-max", "logs", "metrics"] {
            let w = BenchArgs {
                preset: Some(preset.into()),
                size: Some("100-300".into()),
                messages: Some(1),
                ..Default::default()
            }
            .resolve()
            .unwrap();
            let mut g = Generator::new(&w, 1);
            for _ in 0..1000 {
                let m = g.make();
                assert!((100..=300).contains(&m.value.len()), "{preset}");
                assert_eq!(m.key.is_some(), preset != "omb-max");
            }
        }
    }

    #[test]
    fn track_round_trips() {
        assert_eq!(
            parse_track(&track_value(5 << 40 | 9, 123)),
            Some((5 << 40 | 9, 123))
        );
        assert_eq!(parse_track(&[0; 3]), None);
    }
}
