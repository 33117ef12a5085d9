use std::cmp::Ordering;

fn descending(a: &f64, b: &f64) -> Ordering {
    b.total_cmp(a)
}

/// The number of largest losses that VaR and expected shortfall need:
/// k = N − m + 1 with m = ⌈N·α⌉ (computed in `f64`) clamped to [1, N]
/// (0 when there are no paths).
pub fn tail_len(paths: u64, confidence: f64) -> usize {
    if paths == 0 {
        return 0;
    }
    let m = (libm::ceil(paths as f64 * confidence) as u64).clamp(1, paths);
    usize::try_from(paths - m + 1).expect("the tail fits in memory")
}

/// Value-at-risk and expected shortfall from the largest losses sorted
/// descending: VaR is the `k`-th largest loss, expected shortfall the mean of
/// the `k` largest, summed from the largest down.
///
/// # Panics
///
/// When `k` is 0 or `tail_desc` holds fewer than `k` losses.
pub fn risk_from_tail(tail_desc: &[f64], k: usize) -> (f64, f64) {
    assert!(k > 0, "the tail is empty");
    assert!(
        tail_desc.len() >= k,
        "the tail holds {} losses, {k} needed",
        tail_desc.len()
    );
    let mut sum = 0.0;
    for loss in &tail_desc[..k] {
        sum += loss;
    }
    (tail_desc[k - 1], sum / k as f64)
}

/// The `k` largest of a stream of losses, in bounded memory.
///
/// The result does not depend on the order of the losses: ties under
/// [`f64::total_cmp`] are bit-identical values.
#[derive(Debug, Clone, PartialEq)]
pub struct Tail {
    k: usize,
    values: Vec<f64>,
}

impl Tail {
    /// Keeps the `k` largest losses.
    pub fn new(k: usize) -> Self {
        Self {
            k,
            values: Vec::new(),
        }
    }

    /// Offers one loss.
    pub fn push(&mut self, loss: f64) {
        if self.k == 0 {
            return;
        }
        self.values.push(loss);
        // Letting the buffer grow by max(k, 4096) before trimming it back to
        // k keeps the cost of trimming linear in the number of losses.
        if self.values.len() >= self.k + self.k.max(4096) {
            self.trim();
        }
    }

    fn trim(&mut self) {
        if self.values.len() > self.k {
            self.values.select_nth_unstable_by(self.k - 1, descending);
            self.values.truncate(self.k);
        }
    }

    /// The kept losses (at most `k`), largest first.
    pub fn into_sorted_desc(mut self) -> Vec<f64> {
        self.values.sort_unstable_by(descending);
        self.values.truncate(self.k);
        self.values
    }
}

impl Extend<f64> for Tail {
    fn extend<I: IntoIterator<Item = f64>>(&mut self, losses: I) {
        for loss in losses {
            self.push(loss);
        }
    }
}

/// The `k` largest of `losses` (all of them when there are fewer), largest
/// first.
pub fn largest(losses: &[f64], k: usize) -> Vec<f64> {
    let mut tail = Tail::new(k);
    tail.extend(losses.iter().copied());
    tail.into_sorted_desc()
}

/// Encodes losses as consecutive little-endian `f64`s (the format of a task's
/// `tail.bin`).
pub fn encode_tail(losses: &[f64]) -> Vec<u8> {
    losses.iter().flat_map(|l| l.to_le_bytes()).collect()
}

/// Decodes what [`encode_tail`] wrote.
pub fn decode_tail(bytes: &[u8]) -> Result<Vec<f64>, String> {
    if !bytes.len().is_multiple_of(8) {
        return Err(format!(
            "{} bytes is not a whole number of f64 values",
            bytes.len()
        ));
    }
    Ok(bytes
        .chunks_exact(8)
        .map(|c| f64::from_le_bytes(c.try_into().expect("chunks of 8 bytes")))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Model, losses};

    /// The definitions, applied literally to all the losses.
    fn brute_force(losses: &[f64], confidence: f64) -> (f64, f64) {
        let mut sorted = losses.to_vec();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let m = ((n as f64 * confidence).ceil() as usize).clamp(1, n);
        let tail: Vec<f64> = sorted[m - 1..].iter().rev().copied().collect();
        let mut sum = 0.0;
        for loss in &tail {
            sum += loss;
        }
        (sorted[m - 1], sum / tail.len() as f64)
    }

    #[test]
    fn tail_len_follows_the_definition() {
        assert_eq!(tail_len(0, 0.99), 0);
        assert_eq!(tail_len(1, 0.99), 1);
        assert_eq!(tail_len(100, 0.99), 2);
        assert_eq!(tail_len(200_000, 0.99), 2001);
        assert_eq!(tail_len(10, 0.5), 6);
        assert_eq!(tail_len(3, 0.999_999), 1);
    }

    #[test]
    fn risk_from_the_tail_matches_a_full_sort() {
        let model = Model::new(3, 5);
        let all = losses(&model, 0..10_007);
        for confidence in [0.5, 0.9, 0.95, 0.99, 0.999, 0.999_99] {
            for n in [1, 2, 17, 1000, 10_007] {
                let sample = &all[..n];
                let k = tail_len(n as u64, confidence);
                let tail = largest(sample, k);
                assert_eq!(tail.len(), k);
                let (var, es) = risk_from_tail(&tail, k);
                let (expected_var, expected_es) = brute_force(sample, confidence);
                assert_eq!(
                    var.to_bits(),
                    expected_var.to_bits(),
                    "VaR {n} {confidence}"
                );
                assert_eq!(es.to_bits(), expected_es.to_bits(), "ES {n} {confidence}");
            }
        }
    }

    #[test]
    fn tail_keeps_the_largest_in_any_order() {
        let values: Vec<f64> = (0..20_000).map(|i| ((i * 7919) % 20_011) as f64).collect();
        let mut reversed = values.clone();
        reversed.reverse();
        let expected = {
            let mut sorted = values.clone();
            sorted.sort_by(|a, b| b.total_cmp(a));
            sorted.truncate(5000);
            sorted
        };
        assert_eq!(largest(&values, 5000), expected);
        assert_eq!(largest(&reversed, 5000), expected);
        assert_eq!(largest(&values[..3], 5000).len(), 3);
        assert!(largest(&values, 0).is_empty());
    }

    #[test]
    fn tails_round_trip_through_bytes() {
        let tail = [3.5, -0.0, f64::MAX, 1e-300];
        let decoded = decode_tail(&encode_tail(&tail)).unwrap();
        assert_eq!(
            decoded.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            tail.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        );
        assert!(decode_tail(&[0; 7]).is_err());
    }
}
