//! The workloads and the bodies they exchange.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// The small GET's body (~30 bytes of JSON).
pub const SMALL_BODY: &[u8] = b"{\"id\":1,\"name\":\"Leanne G.\"}";
/// The size of the large body.
pub const BIG_LEN: usize = 1 << 20;
/// The size of the POSTed (and echoed) body.
pub const ECHO_LEN: usize = 4096;
/// Objects in the JSON array.
pub const LIST_LEN: usize = 100;

/// One object of the JSON array.
#[derive(Serialize, Deserialize)]
pub struct Item {
    pub id: u64,
    pub name: String,
    pub email: String,
    pub active: bool,
    pub score: f64,
    pub tags: Vec<String>,
}

/// The JSON array of [`LIST_LEN`] objects.
pub fn list_body() -> Bytes {
    let items: Vec<Item> = (0..LIST_LEN as u64)
        .map(|id| Item {
            id,
            name: format!("User number {id}"),
            email: format!("user{id}@example.com"),
            active: id % 3 != 0,
            score: id as f64 * 1.25,
            tags: vec!["alpha".into(), format!("group-{}", id % 7)],
        })
        .collect();
    Bytes::from(serde_json::to_vec(&items).expect("serialize list"))
}

/// The 1 MiB body.
pub fn big_body() -> Bytes {
    Bytes::from(
        (0..BIG_LEN)
            .map(|i| b'a' + (i % 26) as u8)
            .collect::<Vec<u8>>(),
    )
}

/// About 1 MiB of JSON records, as a compressed API response would carry:
/// text that gzip shrinks five to ten times, not a pattern it erases.
/// Made once per process.
pub fn json_mib() -> Bytes {
    static BODY: std::sync::OnceLock<Bytes> = std::sync::OnceLock::new();
    BODY.get_or_init(make_json_mib).clone()
}

fn make_json_mib() -> Bytes {
    let mut out = Vec::with_capacity(BIG_LEN + 256);
    out.push(b'[');
    let mut id = 0u64;
    while out.len() < BIG_LEN - 200 {
        if id > 0 {
            out.push(b',');
        }
        let record = format!(
            r#"{{"id":{id},"name":"User number {id}","email":"user{id}@example.com","score":{:.3},"token":"{:016x}"}}"#,
            id as f64 * 1.37,
            id.wrapping_mul(0x9e37_79b9_7f4a_7c15)
        );
        out.extend_from_slice(record.as_bytes());
        id += 1;
    }
    out.push(b']');
    Bytes::from(out)
}

/// `body` compressed with gzip at the default level, as a server sends it.
pub fn gzipped(body: &[u8]) -> Bytes {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(body).expect("compress");
    Bytes::from(encoder.finish().expect("compress"))
}

/// The 4 KiB POST body.
pub fn echo_body() -> Bytes {
    Bytes::from(vec![b'x'; ECHO_LEN])
}

/// What a client run does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    SmallSeq,
    SmallConc,
    JsonSeq,
    JsonConc,
    BigSeq,
    GzipSeq,
    EchoSeq,
}

/// The concurrency of the concurrent workloads.
pub const CONCURRENCY: usize = 64;

impl Workload {
    pub const ALL: [Workload; 7] = [
        Workload::SmallSeq,
        Workload::SmallConc,
        Workload::JsonSeq,
        Workload::JsonConc,
        Workload::BigSeq,
        Workload::GzipSeq,
        Workload::EchoSeq,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Workload::SmallSeq => "small-seq",
            Workload::SmallConc => "small-c64",
            Workload::JsonSeq => "json-seq",
            Workload::JsonConc => "json-c64",
            Workload::BigSeq => "1mib-seq",
            Workload::GzipSeq => "gzip1mib-seq",
            Workload::EchoSeq => "echo4k-seq",
        }
    }

    pub fn parse(name: &str) -> Option<Workload> {
        Workload::ALL.into_iter().find(|w| w.name() == name)
    }

    pub fn concurrency(self) -> usize {
        match self {
            Workload::SmallConc | Workload::JsonConc => CONCURRENCY,
            _ => 1,
        }
    }

    pub fn path(self) -> &'static str {
        match self {
            Workload::SmallSeq | Workload::SmallConc => "/small",
            Workload::JsonSeq | Workload::JsonConc => "/list",
            Workload::BigSeq => "/big",
            Workload::GzipSeq => "/big.json.gz",
            Workload::EchoSeq => "/echo",
        }
    }

    pub fn is_post(self) -> bool {
        self == Workload::EchoSeq
    }

    pub fn is_json(self) -> bool {
        matches!(self, Workload::JsonSeq | Workload::JsonConc)
    }

    /// Measured requests (a tenth with `--quick`).
    pub fn requests(self, quick: bool) -> usize {
        let full = match self {
            Workload::SmallSeq => 20_000,
            Workload::SmallConc => 50_000,
            Workload::JsonSeq => 5_000,
            Workload::JsonConc => 20_000,
            Workload::BigSeq => 500,
            Workload::GzipSeq => 300,
            Workload::EchoSeq => 10_000,
        };
        if quick {
            full / 10
        } else {
            full
        }
    }

    /// Warm-up requests before measuring (pools filled, caches hot).
    pub fn warmup(self, quick: bool) -> usize {
        let full = match self {
            Workload::SmallSeq | Workload::JsonSeq | Workload::EchoSeq => 1_000,
            Workload::SmallConc | Workload::JsonConc => CONCURRENCY * 20,
            Workload::BigSeq | Workload::GzipSeq => 20,
        };
        if quick {
            (full / 5).max(self.concurrency() * 4)
        } else {
            full
        }
    }

    /// The body length every response must have (JSON is checked by decoding).
    pub fn expected_len(self) -> Option<usize> {
        match self {
            Workload::SmallSeq | Workload::SmallConc => Some(SMALL_BODY.len()),
            Workload::BigSeq => Some(BIG_LEN),
            Workload::GzipSeq => Some(json_mib().len()),
            Workload::EchoSeq => Some(ECHO_LEN),
            Workload::JsonSeq | Workload::JsonConc => None,
        }
    }
}
