//! SRV records and the RFC 2782 order in which their targets are tried.

use rand::Rng;
use serde::Serialize;

/// One `_ischedules._tcp` SRV record as served.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SrvRecord {
    pub priority: u16,
    pub weight: u16,
    pub port: u16,
    /// Target host, lower case, without the trailing dot; `.` stays `.`.
    pub target: String,
    pub ttl: u32,
}

/// RFC 2782: a single record whose target is `.` says the service is
/// decidedly not available at this domain.
pub fn is_no_service(records: &[SrvRecord]) -> bool {
    matches!(records, [only] if only.target == ".")
}

/// Orders targets for one delivery attempt: lowest priority first and,
/// within a priority, the weighted random selection of RFC 2782 (zero-weight
/// records first in the running sum, so they are chosen only rarely).
pub fn order<R: Rng + ?Sized>(records: &[SrvRecord], rng: &mut R) -> Vec<SrvRecord> {
    let mut by_priority: Vec<SrvRecord> = records
        .iter()
        .filter(|r| r.target != ".")
        .cloned()
        .collect();
    by_priority.sort_by_key(|r| r.priority);
    let mut ordered = Vec::with_capacity(by_priority.len());
    for group in by_priority.chunk_by(|a, b| a.priority == b.priority) {
        let mut pool: Vec<SrvRecord> = group.to_vec();
        pool.sort_by_key(|r| r.weight != 0);
        while !pool.is_empty() {
            let total: u32 = pool.iter().map(|r| u32::from(r.weight)).sum();
            let pick = rng.random_range(0..=total);
            let mut running = 0u32;
            let index = pool
                .iter()
                .position(|r| {
                    running += u32::from(r.weight);
                    running >= pick
                })
                .unwrap_or(0);
            ordered.push(pool.remove(index));
        }
    }
    ordered
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn rec(priority: u16, weight: u16, target: &str) -> SrvRecord {
        SrvRecord {
            priority,
            weight,
            port: 443,
            target: target.into(),
            ttl: 60,
        }
    }

    #[test]
    fn lower_priority_always_comes_first() {
        let records = [rec(20, 100, "backup"), rec(10, 1, "a"), rec(10, 1, "b")];
        let mut rng = StdRng::seed_from_u64(7);
        for _ in 0..100 {
            let o = order(&records, &mut rng);
            assert_eq!(o.len(), 3);
            assert_eq!(o[2].target, "backup");
        }
    }

    #[test]
    fn weights_share_the_first_place_proportionally() {
        let records = [rec(0, 90, "heavy"), rec(0, 10, "light")];
        let mut rng = StdRng::seed_from_u64(1);
        let heavy_first = (0..10_000)
            .filter(|_| order(&records, &mut rng)[0].target == "heavy")
            .count();
        // 90 % expected; a wide band keeps the test about the rule, not luck.
        assert!((8_500..=9_500).contains(&heavy_first), "{heavy_first}");
    }

    #[test]
    fn dot_target_means_no_service() {
        assert!(is_no_service(&[rec(0, 0, ".")]));
        assert!(!is_no_service(&[rec(0, 0, "a")]));
        assert!(order(&[rec(0, 0, ".")], &mut StdRng::seed_from_u64(0)).is_empty());
    }
}
