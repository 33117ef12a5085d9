/// One position of the portfolio.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Asset {
    /// What the position holds.
    pub name: &'static str,
    /// The position's value today, in USD.
    pub value: f64,
    /// Annual drift (expected log-return rate before the volatility correction).
    pub drift: f64,
    /// Annual volatility.
    pub volatility: f64,
}

/// The portfolio: a balanced multi-asset book worth 12 million USD.
pub const ASSETS: [Asset; 5] = [
    Asset {
        name: "US equities",
        value: 4_000_000.0,
        drift: 0.07,
        volatility: 0.18,
    },
    Asset {
        name: "European equities",
        value: 2_500_000.0,
        drift: 0.06,
        volatility: 0.20,
    },
    Asset {
        name: "Emerging-market equities",
        value: 1_500_000.0,
        drift: 0.08,
        volatility: 0.26,
    },
    Asset {
        name: "Government bonds",
        value: 3_000_000.0,
        drift: 0.03,
        volatility: 0.06,
    },
    Asset {
        name: "Gold",
        value: 1_000_000.0,
        drift: 0.04,
        volatility: 0.15,
    },
];

/// The correlation of the assets' daily returns, in the order of [`ASSETS`].
pub const CORRELATION: [[f64; 5]; 5] = [
    [1.00, 0.80, 0.65, -0.20, 0.05],
    [0.80, 1.00, 0.70, -0.15, 0.10],
    [0.65, 0.70, 1.00, -0.10, 0.15],
    [-0.20, -0.15, -0.10, 1.00, 0.25],
    [0.05, 0.10, 0.15, 0.25, 1.00],
];
