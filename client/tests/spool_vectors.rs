//! The shared spool test vectors (clients/spool-vectors, docs/spool-format.md): the Rust
//! spool must write exactly their bytes and read them as expected.json says. The Python and
//! Node clients read the same files in their own tests, so a segment written by any of the
//! three is drained by any other.
use std::fs;
use std::path::PathBuf;

use rmq_client::spool::{frame, QuarantineEntry, SendOutcome, Spool, SpoolRecord};
use serde_json::Value;

fn vectors() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../clients/spool-vectors")
}

fn expected() -> Value {
    serde_json::from_slice(&fs::read(vectors().join("expected.json")).unwrap()).unwrap()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

fn text(v: &Value) -> String {
    v.as_str().unwrap().to_string()
}

fn record(v: &Value) -> SpoolRecord {
    SpoolRecord {
        queue: text(&v["queue"]),
        id: text(&v["id"]),
        body: unhex(v["body_hex"].as_str().unwrap()),
        tag: text(&v["tag"]),
        key: text(&v["key"]),
        headers: v["headers"].as_array().unwrap().iter().map(|h| (text(&h[0]), text(&h[1]))).collect(),
        at: v["at"].as_u64(),
        spooled_at: v["spooled_at"].as_u64().unwrap(),
    }
}

fn records() -> Vec<SpoolRecord> {
    expected()["records"].as_array().unwrap().iter().map(record).collect()
}

#[test]
fn rust_writes_exactly_the_bytes_of_the_good_segment() {
    let mut buf = Vec::new();
    for r in records() {
        frame(&r.encode(), &mut buf);
    }
    assert_eq!(buf, fs::read(vectors().join("good.seg")).unwrap());
    // And appending through the spool itself gives the same file.
    let d = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(d.path()).unwrap();
    spool.append(&records()).unwrap();
    assert_eq!(fs::read(d.path().join("0000000000000001.seg")).unwrap(), buf);
}

#[test]
fn every_vector_segment_drains_as_expected() {
    let exp = expected();
    let recs = records();
    for (name, want) in exp["segments"].as_object().unwrap() {
        let d = tempfile::tempdir().unwrap();
        fs::copy(vectors().join(name), d.path().join("0000000000000001.seg")).unwrap();
        let (spool, opened) = Spool::open(d.path()).unwrap();
        let mut got = Vec::new();
        let report = spool
            .drain(
                |b| {
                    got.extend_from_slice(b);
                    Ok(vec![SendOutcome::Taken; b.len()])
                },
                |_| {},
                |_| {},
            )
            .unwrap();
        let delivered: Vec<SpoolRecord> =
            want["delivered"].as_array().unwrap().iter().map(|i| recs[i.as_u64().unwrap() as usize].clone()).collect();
        assert_eq!(got, delivered, "{name}");
        assert_eq!(opened.torn_bytes + report.torn_bytes, want["torn_bytes"].as_u64().unwrap(), "{name}");
        let corrupt = want["corrupt"].as_array().unwrap();
        assert_eq!(report.corrupt, corrupt.len() as u64, "{name}");
        let q = spool.quarantine().unwrap();
        assert_eq!(q.len(), corrupt.len(), "{name}");
        let raw = fs::read(vectors().join(name)).unwrap();
        for (e, c) in q.iter().zip(corrupt) {
            let off = c["offset"].as_u64().unwrap() as usize;
            let len = c["length"].as_u64().unwrap() as usize;
            assert_eq!(e.segment, "0000000000000001.seg");
            assert_eq!(e.offset, off as u64);
            assert_eq!(e.reason, text(&c["reason"]));
            assert_eq!(e.bytes, raw[off..off + len]);
        }
        // Drained: nothing is left but the quarantine.
        assert_eq!(spool.status().unwrap().records, 0, "{name}");
    }
}

#[test]
fn the_quarantine_vector_reads_back_entry_by_entry() {
    let exp = expected();
    let d = tempfile::tempdir().unwrap();
    fs::copy(vectors().join("quarantine"), d.path().join("quarantine")).unwrap();
    let (spool, _) = Spool::open(d.path()).unwrap();
    let got = spool.quarantine().unwrap();
    let want: Vec<QuarantineEntry> = exp["quarantine"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| QuarantineEntry {
            segment: text(&e["segment"]),
            offset: e["offset"].as_u64().unwrap(),
            reason: text(&e["reason"]),
            time: e["time"].as_u64().unwrap(),
            bytes: unhex(e["bytes_hex"].as_str().unwrap()),
        })
        .collect();
    assert_eq!(got, want);
    let mut buf = Vec::new();
    for e in &want {
        frame(&e.encode(), &mut buf);
    }
    assert_eq!(buf, fs::read(vectors().join("quarantine")).unwrap());
    // The refused record inside the second entry is a whole record.
    assert_eq!(got[1].record().unwrap(), records()[0]);
    assert_eq!(spool.status().unwrap().quarantined, 2);
}
