/// Splits cases with these `estimates` (milliseconds) into `min(shards,
/// cases)` shards by longest-processing-time-first: the cases sorted by
/// estimate, longest first (equal estimates in suite order), each assigned to
/// the shard with the least estimated load so far (equal loads: the lowest
/// shard number). Each shard lists its case indices ascending.
pub fn shard(estimates: &[u64], shards: usize) -> Vec<Vec<usize>> {
    let count = shards.min(estimates.len());
    let mut order: Vec<usize> = (0..estimates.len()).collect();
    order.sort_by(|&a, &b| estimates[b].cmp(&estimates[a]).then(a.cmp(&b)));
    let mut loads = vec![0u64; count];
    let mut assigned: Vec<Vec<usize>> = vec![Vec::new(); count];
    for case in order {
        let (target, _) = loads
            .iter()
            .enumerate()
            .min_by_key(|&(i, &load)| (load, i))
            .expect("at least one shard");
        loads[target] += estimates[case];
        assigned[target].push(case);
    }
    for cases in &mut assigned {
        cases.sort_unstable();
    }
    assigned
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_cases_go_first_onto_the_least_loaded_shard() {
        // 8 → s0, 7 → s1, 6 → s2, 5 → s2 (6 < 7 < 8), 4 → s1, 3 → s0.
        let shards = shard(&[3, 8, 5, 7, 4, 6], 3);
        assert_eq!(shards, vec![vec![0, 1], vec![3, 4], vec![2, 5]]);
    }

    #[test]
    fn every_case_lands_once_and_loads_stay_close() {
        let estimates: Vec<u64> = (0..97u64).map(|i| (i * 7919) % 1000 + 1).collect();
        for shards in [1, 2, 5, 16, 97, 200] {
            let plan = shard(&estimates, shards);
            assert_eq!(plan.len(), shards.min(97));
            let mut all: Vec<usize> = plan.iter().flatten().copied().collect();
            all.sort_unstable();
            assert_eq!(all, (0..97).collect::<Vec<_>>());
            // LPT's bound: no shard exceeds the average by more than the
            // longest case.
            let loads: Vec<u64> = plan
                .iter()
                .map(|s| s.iter().map(|&i| estimates[i]).sum())
                .collect();
            let total: u64 = estimates.iter().sum();
            let longest = *estimates.iter().max().unwrap();
            let max = *loads.iter().max().unwrap();
            assert!(
                max <= total / loads.len() as u64 + longest,
                "{shards}: {loads:?}"
            );
            assert_eq!(plan, shard(&estimates, shards), "deterministic");
        }
    }

    #[test]
    fn equal_estimates_keep_suite_order() {
        assert_eq!(shard(&[1, 1, 1, 1], 2), vec![vec![0, 2], vec![1, 3]]);
        assert_eq!(shard(&[], 3), Vec::<Vec<usize>>::new());
    }
}
