//! The bound on what a rebuild's fill holds in memory between batches (`payments::Fill`,
//! `balances::Fill`): past its capacity, the entries touched least recently leave.

use std::collections::HashMap;
use std::hash::Hash;

/// Removes and returns the entries of `map` touched least recently (by `touched`, a feed
/// position) when it holds more than `capacity`, down to seven eighths of it. An eighth
/// at a time keeps the transaction that writes them short: the live projectors'
/// watermark waits for it.
pub(crate) fn take_least_recent<K, V>(
    map: &mut HashMap<K, V>,
    capacity: usize,
    touched: impl Fn(&V) -> i64,
) -> Vec<(K, V)>
where
    K: Hash + Eq + Ord + Clone,
{
    if map.len() <= capacity {
        return Vec::new();
    }
    let mut by_age: Vec<(i64, &K)> = map.iter().map(|(k, v)| (touched(v), k)).collect();
    by_age.sort_unstable();
    let keep = capacity - capacity / 8;
    let leaving: Vec<K> = by_age
        .iter()
        .take(map.len().saturating_sub(keep))
        .map(|(_, k)| (*k).clone())
        .collect();
    leaving.iter().filter_map(|k| map.remove_entry(k)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_least_recently_touched_leave_down_to_seven_eighths() {
        let mut map: HashMap<u32, i64> = (0..20).map(|k| (k, i64::from(k) * 10)).collect();
        assert!(take_least_recent(&mut map, 20, |v| *v).is_empty());
        map.insert(99, 5);
        let mut gone: Vec<u32> = take_least_recent(&mut map, 16, |v| *v)
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        gone.sort_unstable();
        // 21 held, 14 kept (16 - 16/8): the seven touched longest ago leave.
        assert_eq!(gone, vec![0, 1, 2, 3, 4, 5, 99]);
        assert_eq!(map.len(), 14);
    }
}
