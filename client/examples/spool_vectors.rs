//! Writes the shared spool test vectors (docs/spool-format.md) that the Rust, Python and Node
//! clients all read in their tests. They are generated once and checked in; run this again
//! only when the format changes on purpose:
//!
//!     cargo run -p rmq-client --example spool_vectors -- clients/spool-vectors
//!
//! Files written: `good.seg` (every record, intact), `torn.seg` (four records and half of the
//! fifth: a torn tail), `corrupt.seg` (every record, one byte of the third flipped),
//! `quarantine` (two quarantine entries) and `expected.json` (the records and what a reader
//! must make of each file).
use std::path::PathBuf;

use rmq_client::spool::{frame, QuarantineEntry, SpoolRecord, HEADER};
use serde_json::{json, Value};

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn records() -> Vec<SpoolRecord> {
    let long_body: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
    vec![
        SpoolRecord {
            queue: "orders".into(),
            id: "0190a0b1-7c2e-7d3f-8a4b-5c6d7e8f9a0b".into(),
            body: br#"{"sku":42}"#.to_vec(),
            tag: "created".into(),
            key: "cust-7".into(),
            headers: vec![("trace".into(), "abc".into())],
            at: None,
            spooled_at: 1_767_225_600_000,
        },
        SpoolRecord {
            queue: "a/b:c#d-e_f.g".into(),
            id: "id-1".into(),
            body: (0..=255u8).collect(),
            tag: String::new(),
            key: String::new(),
            headers: vec![],
            at: Some(1_767_225_660_000),
            spooled_at: 1_767_225_600_001,
        },
        SpoolRecord {
            queue: "jobs".into(),
            id: "unicode-2".into(),
            body: "héllo ✓ 日本語".as_bytes().to_vec(),
            tag: "t".into(),
            key: "k".into(),
            headers: vec![("lang".into(), "日本語".into()), ("empty".into(), String::new()), ("x-trace".into(), "a=b; c".into())],
            at: Some(0),
            spooled_at: 0,
        },
        SpoolRecord {
            queue: "q".repeat(200),
            id: "i".repeat(128),
            body: long_body,
            tag: "big".into(),
            key: String::new(),
            headers: vec![("n".into(), "20000".into())],
            at: None,
            spooled_at: 1_767_225_600_003,
        },
        SpoolRecord {
            queue: "jobs".into(),
            // A record spooled without an id (a writer that left it empty): the drain pushes
            // it without ID.
            id: String::new(),
            body: Vec::new(),
            tag: String::new(),
            key: String::new(),
            headers: vec![],
            at: Some(9_007_199_254_740_991),
            spooled_at: 127,
        },
        SpoolRecord {
            queue: "jobs".into(),
            id: "last".into(),
            body: b"x".to_vec(),
            tag: String::new(),
            key: "k".into(),
            headers: vec![],
            at: Some(128),
            spooled_at: 16_384,
        },
    ]
}

fn record_json(r: &SpoolRecord) -> Value {
    json!({
        "queue": r.queue,
        "id": r.id,
        "body_hex": hex(&r.body),
        "tag": r.tag,
        "key": r.key,
        "headers": r.headers.iter().map(|(k, v)| json!([k, v])).collect::<Vec<_>>(),
        "at": r.at,
        "spooled_at": r.spooled_at,
    })
}

fn main() -> std::io::Result<()> {
    let dir = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "clients/spool-vectors".into()));
    std::fs::create_dir_all(&dir)?;
    let recs = records();
    let payloads: Vec<Vec<u8>> = recs.iter().map(|r| r.encode()).collect();
    let mut starts = Vec::new();
    let mut good = Vec::new();
    for p in &payloads {
        starts.push(good.len());
        frame(p, &mut good);
    }
    std::fs::write(dir.join("good.seg"), &good)?;

    // Four whole records, then half of the fifth's frame: what a crash mid-append leaves.
    let mut torn = good[..starts[4]].to_vec();
    let mut fifth = Vec::new();
    frame(&payloads[4], &mut fifth);
    let torn_len = fifth.len() / 2;
    torn.extend_from_slice(&fifth[..torn_len]);
    std::fs::write(dir.join("torn.seg"), &torn)?;

    // Every record, with one byte inside the third record's payload flipped after the write.
    let mut corrupt = good.clone();
    corrupt[starts[2] + HEADER + 5] ^= 0x40;
    std::fs::write(dir.join("corrupt.seg"), &corrupt)?;

    let entries = vec![
        QuarantineEntry {
            segment: "0000000000000001.seg".into(),
            offset: starts[2] as u64,
            reason: "CRC mismatch".into(),
            time: 1_767_225_700_000,
            bytes: corrupt[starts[2]..starts[3]].to_vec(),
        },
        QuarantineEntry {
            segment: "0000000000000002.seg".into(),
            offset: 0,
            reason: "refused by Redis: ERR invalid queue name".into(),
            time: 1_767_225_700_001,
            bytes: payloads[0].clone(),
        },
    ];
    let mut quarantine = Vec::new();
    let mut entry_payloads = Vec::new();
    for e in &entries {
        let p = e.encode();
        frame(&p, &mut quarantine);
        entry_payloads.push(p);
    }
    std::fs::write(dir.join("quarantine"), &quarantine)?;

    let expected = json!({
        "about": "Shared spool test vectors; see docs/spool-format.md. Generated by `cargo run -p rmq-client --example spool_vectors`.",
        "records": recs.iter().map(record_json).collect::<Vec<_>>(),
        "segments": {
            "good.seg": {
                "delivered": [0, 1, 2, 3, 4, 5],
                "corrupt": [],
                "torn_bytes": 0,
                "size": good.len(),
            },
            "torn.seg": {
                "delivered": [0, 1, 2, 3],
                "corrupt": [],
                "torn_bytes": torn_len,
                "size": torn.len(),
            },
            "corrupt.seg": {
                "delivered": [0, 1, 3, 4, 5],
                "corrupt": [{
                    "offset": starts[2],
                    "length": starts[3] - starts[2],
                    "reason": "CRC mismatch",
                }],
                "torn_bytes": 0,
                "size": corrupt.len(),
            },
        },
        "quarantine": entries.iter().zip(&entry_payloads).map(|(e, p)| json!({
            "segment": e.segment,
            "offset": e.offset,
            "reason": e.reason,
            "time": e.time,
            "bytes_hex": hex(&e.bytes),
            "payload_hex": hex(p),
        })).collect::<Vec<_>>(),
    });
    std::fs::write(dir.join("expected.json"), serde_json::to_string_pretty(&expected)? + "\n")?;
    println!("spool vectors written to {}", dir.display());
    Ok(())
}
