//! Which member owns a service key: rendezvous (highest random weight) hashing over the
//! sorted list of healthy, loaded members.
//!
//! Every member computes the same owner from the same list, with no coordination. When
//! a member leaves, only the keys it owned move (each to its next-highest member); when
//! one joins, only the keys it now wins move to it. Plain `hash % n` would move about
//! two thirds of all keys on any change.

use crate::model::ServiceKey;

/// FNV-1a, 64 bits: stable across builds and platforms (std's hasher is seeded).
pub fn fnv1a(bytes: &[u8], mut h: u64) -> u64 {
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// The key's hash, computed once per lookup.
pub fn key_hash(key: &ServiceKey) -> u64 {
    let mut h = FNV_OFFSET;
    for part in [&key.namespace, &key.group, &key.name] {
        h = fnv1a(part.as_bytes(), h);
        h = fnv1a(&[0xff], h);
    }
    h
}

/// Mixes a member id into a key hash (a final avalanche so close ids spread well).
fn weight(key_hash: u64, member: &str) -> u64 {
    let mut h = fnv1a(member.as_bytes(), key_hash);
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// The owner of `key` among `members` (sorted, deduplicated), or `None` when empty.
pub fn owner<'a>(key: &ServiceKey, members: &'a [String]) -> Option<&'a str> {
    let kh = key_hash(key);
    members
        .iter()
        .max_by_key(|m| (weight(kh, m), std::cmp::Reverse(m.as_str())))
        .map(String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(ids: &[&str]) -> Vec<String> {
        ids.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn every_member_computes_the_same_owner_and_load_spreads() {
        let m = members(&["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"]);
        let mut counts = [0usize; 3];
        for i in 0..3000 {
            let k = ServiceKey::simple(format!("svc-{i}"));
            let o = owner(&k, &m).unwrap();
            assert_eq!(Some(o), owner(&k, &m.clone()));
            counts[m.iter().position(|x| x == o).unwrap()] += 1;
        }
        assert!(counts.iter().all(|c| *c > 800), "{counts:?}");
    }

    #[test]
    fn only_a_leaving_members_keys_move() {
        let all = members(&["a:1", "b:1", "c:1"]);
        let without_c = members(&["a:1", "b:1"]);
        for i in 0..2000 {
            let k = ServiceKey::simple(format!("s{i}"));
            let before = owner(&k, &all).unwrap();
            let after = owner(&k, &without_c).unwrap();
            if before != "c:1" {
                assert_eq!(before, after, "key {i} moved though its owner stayed");
            }
        }
        assert_eq!(owner(&ServiceKey::simple("x"), &[]), None);
    }
}
