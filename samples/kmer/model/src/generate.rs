/// Repeated elements the generator inserts, so that some k-mers are
/// frequent (as in real genomes).
const MOTIFS: [&[u8]; 4] = [
    b"GGCCGGGCGCGGTGGCTCACGCCTGTAATC",
    b"TTAGGGTTAGGGTTAGGGTTAGGGTTAGGG",
    b"ACGTTGCATGCAACGTAGCTAGCTAGGATCC",
    b"CATCATCATCATCATCATCATCATCAT",
];

/// A xorshift64 generator: simple, fast and the same everywhere.
struct XorShift(u64);

impl XorShift {
    fn new(seed: u64) -> Self {
        // splitmix64 of the seed, so that nearby seeds (and 0) start far apart.
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Self((z ^ (z >> 31)) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A number in `0..n` (n ≥ 1).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A deterministic FASTA text of `records` records whose lengths average
/// `mean_len` bases (uniform in `mean_len/2 ..= 3·mean_len/2`).
///
/// It exercises what a reader must handle: sequences wrapped at 50 to 80
/// columns, some records with Windows line endings, lowercase (soft-masked)
/// stretches, runs of `N`, the odd blank line and header-only record, and
/// repeated motifs that make some k-mers frequent.
pub fn generate_fasta(seed: u64, records: usize, mean_len: usize) -> String {
    let mut rng = XorShift::new(seed);
    let mut out = Vec::with_capacity(records * (mean_len + mean_len / 50 + 40));
    let mut seq = Vec::new();
    for r in 0..records {
        let eol: &[u8] = if rng.below(6) == 0 { b"\r\n" } else { b"\n" };
        out.extend_from_slice(format!(">seq{r} synthetic record, seed {seed}").as_bytes());
        out.extend_from_slice(eol);
        let len = if rng.below(25) == 0 {
            0
        } else {
            mean_len / 2 + rng.below(mean_len as u64 + 1) as usize
        };
        seq.clear();
        let mut lower = false;
        while seq.len() < len {
            let roll = rng.below(1000);
            if roll < 20 {
                let motif = MOTIFS[rng.below(MOTIFS.len() as u64) as usize];
                seq.extend_from_slice(motif);
            } else if roll < 25 {
                let run = 1 + rng.below(12) as usize;
                seq.extend(std::iter::repeat_n(b'N', run));
            } else {
                if roll < 28 {
                    lower = !lower;
                }
                seq.push(b"ACGT"[rng.below(4) as usize]);
            }
            if lower && let Some(last) = seq.last_mut() {
                *last = last.to_ascii_lowercase();
            }
        }
        seq.truncate(len);
        let width = [50, 60, 70, 80][rng.below(4) as usize];
        for line in seq.chunks(width) {
            out.extend_from_slice(line);
            out.extend_from_slice(eol);
        }
        if rng.below(10) == 0 {
            out.extend_from_slice(eol);
        }
    }
    String::from_utf8(out).expect("the generator writes ASCII")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `image/demo.fa`, the file a job without inputs counts, is
    /// `generate_fasta(2024, 200, 1000)`; `KMER_WRITE_DEMO=1` rewrites it.
    #[test]
    fn the_demo_file_is_generated() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../image/demo.fa");
        let expected = generate_fasta(2024, 200, 1000);
        if std::env::var_os("KMER_WRITE_DEMO").is_some() {
            std::fs::write(path, &expected).unwrap();
        }
        assert!(
            std::fs::read_to_string(path).unwrap() == expected,
            "{path} is stale"
        );
    }

    #[test]
    fn generation_is_deterministic_and_varied() {
        let a = generate_fasta(1, 200, 400);
        assert_eq!(a, generate_fasta(1, 200, 400));
        assert_ne!(a, generate_fasta(2, 200, 400));
        assert_eq!(a.matches('>').count(), 200);
        assert!(a.contains("\r\n"));
        assert!(a.contains('N'));
        assert!(a.bytes().any(|b| b"acgt".contains(&b)));
        let bases = a
            .lines()
            .filter(|l| !l.starts_with('>'))
            .map(|l| l.trim_end().len())
            .sum::<usize>();
        assert!((200 * 300..200 * 500).contains(&bases), "{bases}");
        assert_eq!(generate_fasta(9, 0, 100), "");
    }
}
