//! Feature drift: the population stability index (PSI) of each numeric feature over a rolling
//! window of recent requests, against the reference distribution shipped with the model.

use serde::Deserialize;

#[derive(Debug, Deserialize)]
pub struct Reference {
    pub features: Vec<FeatureReference>,
}

#[derive(Debug, Deserialize)]
pub struct FeatureReference {
    pub name: String,
    /// Inner bin edges; bins are (-inf, e0], (e0, e1], ..., (en, inf).
    pub edges: Vec<f64>,
    pub proportions: Vec<f64>,
}

struct FeatureWindow {
    name: String,
    column: usize,
    edges: Vec<f64>,
    expected: Vec<f64>,
    counts: Vec<u64>,
}

pub struct Drift {
    features: Vec<FeatureWindow>,
    /// The window's bins, one row of `features.len()` per request row, as a ring (no allocation
    /// per row: this runs on the inference thread).
    window: Vec<u16>,
    /// Ring index of the oldest row once the window is full (until then the rows are in order).
    head: usize,
    capacity: usize,
}

/// Small floor so empty bins do not make the index infinite.
const FLOOR: f64 = 1e-4;

impl Drift {
    /// `columns` maps a contract feature name to its column in encoded rows.
    pub fn new(reference: Reference, columns: &[String], capacity: usize) -> Result<Self, String> {
        let mut features = Vec::new();
        for f in reference.features {
            let Some(column) = columns.iter().position(|c| *c == f.name) else { continue };
            if f.proportions.len() != f.edges.len() + 1 {
                return Err(format!(
                    "feature {}: {} proportions for {} edges",
                    f.name,
                    f.proportions.len(),
                    f.edges.len()
                ));
            }
            let n = f.proportions.len();
            features.push(FeatureWindow {
                name: f.name,
                column,
                edges: f.edges,
                expected: f.proportions,
                counts: vec![0; n],
            });
        }
        Ok(Self { features, window: Vec::new(), head: 0, capacity: capacity.max(1) })
    }

    fn bin(edges: &[f64], x: f64) -> u16 {
        edges.partition_point(|e| *e < x) as u16
    }

    /// How many rows the window holds.
    fn rows(&self) -> usize {
        self.window.len() / self.features.len().max(1)
    }

    /// Adds the rows (width columns each) to the window, dropping the oldest beyond capacity.
    pub fn observe(&mut self, width: usize, values: &[f32]) {
        let n = self.features.len();
        if n == 0 || width == 0 {
            return;
        }
        for row in values.chunks_exact(width) {
            let slot = if self.rows() == self.capacity {
                // Full: the oldest row leaves and its slot takes the new one.
                let slot = self.head;
                self.head = (self.head + 1) % self.capacity;
                for (f, &b) in self.features.iter_mut().zip(&self.window[slot * n..(slot + 1) * n]) {
                    if b != u16::MAX {
                        f.counts[b as usize] -= 1;
                    }
                }
                slot
            } else {
                let slot = self.rows();
                self.window.resize((slot + 1) * n, u16::MAX);
                slot
            };
            for (f, bin) in self.features.iter_mut().zip(&mut self.window[slot * n..(slot + 1) * n]) {
                let x = row[f.column] as f64;
                *bin = if x.is_nan() { u16::MAX } else { Self::bin(&f.edges, x) };
                if *bin != u16::MAX {
                    f.counts[*bin as usize] += 1;
                }
            }
        }
    }

    pub fn psi(&self) -> Vec<(String, f64)> {
        self.features
            .iter()
            .filter_map(|f| {
                let total: u64 = f.counts.iter().sum();
                (total > 0).then(|| {
                    let psi = f
                        .counts
                        .iter()
                        .zip(&f.expected)
                        .map(|(c, e)| {
                            let a = (*c as f64 / total as f64).max(FLOOR);
                            let e = e.max(FLOOR);
                            (a - e) * (a / e).ln()
                        })
                        .sum();
                    (f.name.clone(), psi)
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drift(capacity: usize) -> Drift {
        let r = Reference {
            features: vec![FeatureReference {
                name: "x".into(),
                edges: vec![1.0, 2.0],
                proportions: vec![0.25, 0.5, 0.25],
            }],
        };
        Drift::new(r, &["y".into(), "x".into()], capacity).unwrap()
    }

    #[test]
    fn matching_distribution_has_near_zero_psi_and_a_shift_has_a_large_one() {
        let mut d = drift(100);
        let same: Vec<f32> = [0.5, 1.5, 1.5, 2.5].iter().flat_map(|x| [0.0, *x]).collect();
        d.observe(2, &same);
        assert!(d.psi()[0].1 < 1e-9, "{:?}", d.psi());
        let mut d = drift(4);
        let shifted: Vec<f32> = [9.0; 8].iter().flat_map(|x| [0.0, *x]).collect();
        d.observe(2, &shifted);
        assert!(d.psi()[0].1 > 1.0, "{:?}", d.psi());
        assert_eq!(d.rows(), 4, "rolling window is bounded");
        assert_eq!(d.window.len(), 4);
        // The window rolls: four rows back at the reference distribution bring the index back down.
        d.observe(2, &same);
        assert!(d.psi()[0].1 < 1e-9, "{:?}", d.psi());
    }
}
