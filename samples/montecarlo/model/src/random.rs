//! Per-path random numbers: splitmix64 seeds a xoshiro256** generator from
//! (seed, path index), and the ziggurat method turns its output into normals.

const GOLDEN_GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// The splitmix64 finaliser: a bijection that scatters nearby inputs.
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The normal random numbers of one path.
pub(crate) struct PathRng {
    state: [u64; 4],
}

impl PathRng {
    pub(crate) fn new(seed: u64, path: u64) -> Self {
        // Both mixes are bijections, so for a given seed no two paths start
        // from the same splitmix64 state.
        let mut splitmix = mix64(seed ^ mix64(path));
        let mut next = || {
            splitmix = splitmix.wrapping_add(GOLDEN_GAMMA);
            mix64(splitmix)
        };
        Self {
            state: [next(), next(), next(), next()],
        }
    }

    fn next_u64(&mut self) -> u64 {
        let s = &mut self.state;
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// A uniform number in [0, 1) with 53 random bits.
    fn uniform(&mut self) -> f64 {
        // The value is below 2^53, so the signed conversion is exact (and
        // cheaper than the unsigned one in WebAssembly).
        ((self.next_u64() >> 11) as i64) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// A standard normal number, by the ziggurat method (Marsaglia and
    /// Tsang, 2000): almost every draw costs one random word, a table
    /// lookup and a comparison; the rare rest uses `libm`.
    pub(crate) fn normal(&mut self, zig: &Ziggurat) -> f64 {
        loop {
            let bits = self.next_u64();
            let layer = (bits & 0xff) as usize;
            // Bits 11..64 give a uniform number in [-1, 1); bits 0..8 the layer.
            let u = 2.0 * (((bits >> 11) as i64) as f64 * (1.0 / (1u64 << 53) as f64)) - 1.0;
            let x = u * zig.x[layer];
            if x.abs() < zig.x[layer + 1] {
                return x;
            }
            if layer == 0 {
                return self.tail(u < 0.0);
            }
            let y = zig.f[layer + 1] + self.uniform() * (zig.f[layer] - zig.f[layer + 1]);
            if y < libm::exp(-0.5 * x * x) {
                return x;
            }
        }
    }

    /// A draw from the normal tail beyond [`ZIGGURAT_R`] (Marsaglia, 1964).
    fn tail(&mut self, negative: bool) -> f64 {
        loop {
            // 1 − u lies in (0, 1], so the logarithms are finite.
            let a = -libm::log(1.0 - self.uniform()) / ZIGGURAT_R;
            let b = -libm::log(1.0 - self.uniform());
            if 2.0 * b > a * a {
                let x = ZIGGURAT_R + a;
                return if negative { -x } else { x };
            }
        }
    }
}

/// Where the ziggurat's base layer meets the tail (256 layers).
const ZIGGURAT_R: f64 = 3.654_152_885_361_009;
/// The area of each of the 256 layers.
const ZIGGURAT_V: f64 = 0.004_928_673_233_99;

/// The ziggurat's layer edges `x` and the normal density `f` at them,
/// computed once with `libm` (so identical natively and in wasm).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Ziggurat {
    x: [f64; 257],
    f: [f64; 257],
}

impl Ziggurat {
    pub(crate) fn new() -> Self {
        let density = |x: f64| libm::exp(-0.5 * x * x);
        let mut x = [0.0; 257];
        x[0] = ZIGGURAT_V / density(ZIGGURAT_R);
        x[1] = ZIGGURAT_R;
        for i in 2..256 {
            x[i] = libm::sqrt(-2.0 * libm::log(ZIGGURAT_V / x[i - 1] + density(x[i - 1])));
        }
        x[256] = 0.0;
        let mut f = [0.0; 257];
        for (fi, xi) in f.iter_mut().zip(&x) {
            *fi = density(*xi);
        }
        Self { x, f }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normals_have_unit_variance() {
        let mut rng = PathRng::new(7, 0);
        let zig = Ziggurat::new();
        let n = 200_000;
        let (mut sum, mut squares) = (0.0, 0.0);
        for _ in 0..n {
            let z = rng.normal(&zig);
            sum += z;
            squares += z * z;
        }
        let mean = sum / n as f64;
        let variance = squares / n as f64 - mean * mean;
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((variance - 1.0).abs() < 0.01, "variance {variance}");
    }

    /// The standard normal distribution function, for checking draws.
    fn phi(x: f64) -> f64 {
        0.5 * libm::erfc(-x / std::f64::consts::SQRT_2)
    }

    #[test]
    fn normals_follow_the_normal_distribution() {
        let zig = Ziggurat::new();
        let n = 1_000_000;
        let mut draws = Vec::with_capacity(n);
        for path in 0..(n / 10) as u64 {
            let mut rng = PathRng::new(11, path);
            draws.extend((0..10).map(|_| rng.normal(&zig)));
        }
        draws.sort_by(f64::total_cmp);
        // Kolmogorov–Smirnov distance against Φ: about 0.0014 at 99.9%
        // confidence for a million draws.
        let ks = draws
            .iter()
            .enumerate()
            .map(|(i, &x)| {
                let p = phi(x);
                (p - i as f64 / n as f64)
                    .abs()
                    .max(((i + 1) as f64 / n as f64 - p).abs())
            })
            .fold(0.0, f64::max);
        assert!(ks < 0.002, "KS distance {ks}");
        // The tail beyond the base layer is drawn too, at the right rate.
        let beyond = draws.iter().filter(|x| x.abs() > ZIGGURAT_R).count() as f64 / n as f64;
        let expected = 2.0 * (1.0 - phi(ZIGGURAT_R));
        assert!((beyond - expected).abs() < 0.0002, "{beyond} vs {expected}");
    }

    #[test]
    fn paths_get_different_streams() {
        let a = PathRng::new(42, 0).next_u64();
        let b = PathRng::new(42, 1).next_u64();
        let c = PathRng::new(43, 0).next_u64();
        assert_ne!(a, b);
        assert_ne!(a, c);
        assert_eq!(a, PathRng::new(42, 0).next_u64());
    }
}
