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

/// Sequencing reads of one genome: a random genome of `genome_len` bases
/// (seeded by `seed`), then `reads` records of `read_len` bases, each taken
/// from a random position of the genome, half of them as the reverse
/// complement (the other strand), in lines of 80. Like real sequencing data,
/// every k-mer occurs many times when `reads × read_len` exceeds the genome.
pub fn generate_reads(seed: u64, genome_len: usize, reads: usize, read_len: usize) -> String {
    let mut rng = XorShift::new(seed);
    let genome: Vec<u8> = (0..genome_len)
        .map(|_| b"ACGT"[rng.below(4) as usize])
        .collect();
    let read_len = read_len.min(genome_len);
    let mut out = Vec::with_capacity(reads * (read_len + read_len / 80 + 24));
    let mut read = Vec::with_capacity(read_len);
    for r in 0..reads {
        let start = rng.below((genome_len - read_len + 1) as u64) as usize;
        read.clear();
        read.extend_from_slice(&genome[start..start + read_len]);
        if rng.below(2) == 1 {
            read.reverse();
            for base in &mut read {
                *base = match *base {
                    b'A' => b'T',
                    b'C' => b'G',
                    b'G' => b'C',
                    _ => b'A',
                };
            }
        }
        out.extend_from_slice(format!(">read{r} pos={start}\n").as_bytes());
        for line in read.chunks(80) {
            out.extend_from_slice(line);
            out.push(b'\n');
        }
    }
    String::from_utf8(out).expect("the generator writes ASCII")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_are_pieces_of_one_genome_on_either_strand() {
        let text = generate_reads(5, 2_000, 300, 150);
        assert_eq!(text, generate_reads(5, 2_000, 300, 150));
        let records: Vec<(&str, String)> = text
            .split('>')
            .skip(1)
            .map(|record| {
                let (header, seq) = record.split_once('\n').unwrap();
                (header, seq.replace('\n', ""))
            })
            .collect();
        assert_eq!(records.len(), 300);
        assert!(records.iter().all(|(_, seq)| seq.len() == 150));
        // Two reads from the same position are the same bases or each
        // other's reverse complement.
        let complement = |seq: &str| -> String {
            seq.bytes()
                .rev()
                .map(|b| match b {
                    b'A' => 'T',
                    b'C' => 'G',
                    b'G' => 'C',
                    _ => 'A',
                })
                .collect()
        };
        for (h1, s1) in &records {
            for (h2, s2) in &records {
                let pos = |h: &str| h.split("pos=").nth(1).unwrap().to_string();
                if h1 != h2 && pos(h1) == pos(h2) {
                    assert!(s1 == s2 || *s1 == complement(s2), "{h1} {h2}");
                }
            }
        }
        assert!(text.lines().all(|l| l.len() <= 80));

        // Reads as long as the genome: the genome itself or its other strand,
        // both of which occur.
        let whole = generate_reads(6, 500, 40, 500);
        let mut seqs: Vec<String> = whole
            .split('>')
            .skip(1)
            .map(|record| record.split_once('\n').unwrap().1.replace('\n', ""))
            .collect();
        seqs.sort();
        seqs.dedup();
        assert_eq!(seqs.len(), 2);
        assert_eq!(seqs[0], complement(&seqs[1]));
    }

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
