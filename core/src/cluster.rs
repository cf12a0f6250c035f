//! Redis Cluster arithmetic the module needs: a queue's hash slot, and which slots a node is
//! moving (from its `CLUSTER NODES` line).

use std::collections::BTreeSet;

/// The hash slot of a queue: CRC16 (XMODEM) of its name mod 16384. A queue name has no
/// braces, so the whole name is the hash tag of `msg:{q}` and the queue's other keys.
pub fn slot_of(q: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in q {
        crc ^= (b as u16) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 { (crc << 1) ^ 0x1021 } else { crc << 1 };
        }
    }
    crc & 0x3fff
}

/// The slots the node marked `myself` is migrating (`[5->-id]`) or importing (`[5-<-id]`), from
/// a `CLUSTER NODES` reply.
pub fn moving_slots(nodes: &str) -> BTreeSet<u16> {
    let mut out = BTreeSet::new();
    let myself = |l: &&str| l.split(' ').nth(2).is_some_and(|flags| flags.split(',').any(|f| f == "myself"));
    for line in nodes.lines().filter(myself) {
        for field in line.split(' ').skip(8) {
            let Some(inner) = field.strip_prefix('[').and_then(|f| f.strip_suffix(']')) else { continue };
            if let Some(slot) = inner.split(['-', '<', '>']).next().and_then(|s| s.parse().ok()) {
                out.insert(slot);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_redis_cluster_key_slots() {
        // CLUSTER KEYSLOT foo, and the CRC16 check value of "123456789".
        assert_eq!(slot_of(b"foo"), 12182);
        assert_eq!(slot_of(b"123456789"), 12739);
        assert_eq!(slot_of(b""), 0);
    }

    #[test]
    fn migrating_and_importing_slots_of_myself_are_found() {
        let nodes = "\
07c3 127.0.0.1:30004@40004 slave e7d1 0 1 4 connected
e7d1 127.0.0.1:30001@40001 myself,master - 0 0 1 connected 0-5460 [5372->-67ed] [93-<-292f]
67ed 127.0.0.1:30002@40002 master - 0 1 2 connected 5461-10922 [77-<-e7d1]
";
        assert_eq!(moving_slots(nodes), BTreeSet::from([93, 5372]));
    }
}
