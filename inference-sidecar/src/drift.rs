//! Feature drift: the population stability index (PSI) of each numeric feature over a rolling
//! window of recent requests, against the reference distribution shipped with the model.

pub use modelrollout_contract::evidence::{BIN_MISSING, FeatureReference, Measure, Reference};

/// The reference a sidecar loaded: as its drift window uses it, and the digest of the file.
#[derive(Clone, Debug, PartialEq)]
pub struct Loaded {
    pub sha256: String,
    pub reference: Reference,
}

struct FeatureWindow {
    reference: FeatureReference,
    column: usize,
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
    /// Features of the reference that are not model inputs are left out.
    pub fn new(reference: Reference, columns: &[String], capacity: usize) -> Result<Self, String> {
        reference.check()?;
        let mut features = Vec::new();
        for f in reference.features {
            let Some(column) = columns.iter().position(|c| *c == f.name) else { continue };
            let n = f.proportions.len();
            features.push(FeatureWindow { reference: f, column, counts: vec![0; n] });
        }
        Ok(Self { features, window: Vec::new(), head: 0, capacity: capacity.max(1) })
    }

    /// The reference as this window uses it: the features it bins, in the order of the bins
    /// [`Drift::observe`] writes (what the evidence service is told).
    pub fn reference(&self) -> Reference {
        Reference { features: self.features.iter().map(|f| f.reference.clone()).collect() }
    }

    /// How many features each row is binned on.
    pub fn width(&self) -> usize {
        self.features.len()
    }

    /// How many rows the window holds.
    fn rows(&self) -> usize {
        self.window.len() / self.features.len().max(1)
    }

    /// Adds the rows (width columns each) to the window, dropping the oldest beyond capacity; with
    /// `bins`, appends each row's bins to it ([`Drift::width`] per row, [`BIN_MISSING`] for none).
    pub fn observe(&mut self, width: usize, values: &[f32], mut bins: Option<&mut Vec<u16>>) {
        if width == 0 {
            return;
        }
        for row in values.chunks_exact(width) {
            self.push(
                |f| if f.reference.measure == Measure::Value { row[f.column] as f64 } else { f64::NAN },
                &mut bins,
            );
        }
    }

    /// The same for a text model's rows (one text each): the length features are binned.
    pub fn observe_text(&mut self, texts: &[String], mut bins: Option<&mut Vec<u16>>) {
        for text in texts {
            self.push(
                |f| match f.reference.measure {
                    Measure::Length if f.column == 0 => text.chars().count() as f64,
                    _ => f64::NAN,
                },
                &mut bins,
            );
        }
    }

    /// Adds one row, each feature's value given by `value_of`.
    fn push(&mut self, value_of: impl Fn(&FeatureWindow) -> f64, bins: &mut Option<&mut Vec<u16>>) {
        let n = self.features.len();
        if n == 0 {
            return;
        }
        let slot = if self.rows() == self.capacity {
            // Full: the oldest row leaves and its slot takes the new one.
            let slot = self.head;
            self.head = (self.head + 1) % self.capacity;
            for (f, &b) in self.features.iter_mut().zip(&self.window[slot * n..(slot + 1) * n]) {
                if b != BIN_MISSING {
                    f.counts[b as usize] -= 1;
                }
            }
            slot
        } else {
            let slot = self.rows();
            self.window.resize((slot + 1) * n, BIN_MISSING);
            slot
        };
        for (f, bin) in self.features.iter_mut().zip(&mut self.window[slot * n..(slot + 1) * n]) {
            *bin = f.reference.bin(value_of(f));
            if *bin != BIN_MISSING {
                f.counts[*bin as usize] += 1;
            }
        }
        if let Some(out) = bins.as_deref_mut() {
            out.extend_from_slice(&self.window[slot * n..(slot + 1) * n]);
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
                        .zip(&f.reference.proportions)
                        .map(|(c, e)| {
                            let a = (*c as f64 / total as f64).max(FLOOR);
                            let e = e.max(FLOOR);
                            (a - e) * (a / e).ln()
                        })
                        .sum();
                    (f.reference.name.clone(), psi)
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
                measure: Measure::Value,
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
        let mut bins = Vec::new();
        d.observe(2, &same, Some(&mut bins));
        assert_eq!(bins, [0, 1, 1, 2], "one bin per row for the one reference feature model input");
        assert!(d.psi()[0].1 < 1e-9, "{:?}", d.psi());
        let mut d = drift(4);
        let shifted: Vec<f32> = [9.0; 8].iter().flat_map(|x| [0.0, *x]).collect();
        d.observe(2, &shifted, None);
        assert!(d.psi()[0].1 > 1.0, "{:?}", d.psi());
        assert_eq!(d.rows(), 4, "rolling window is bounded");
        assert_eq!(d.window.len(), 4);
        // The window rolls: four rows back at the reference distribution bring the index back down.
        d.observe(2, &same, None);
        assert!(d.psi()[0].1 < 1e-9, "{:?}", d.psi());
    }

    #[test]
    fn a_text_model_is_binned_on_length() {
        let r = Reference {
            features: vec![FeatureReference {
                name: "text".into(),
                measure: Measure::Length,
                edges: vec![3.0, 10.0],
                proportions: vec![0.25, 0.5, 0.25],
            }],
        };
        let mut d = Drift::new(r, &["text".into()], 10).unwrap();
        let mut bins = Vec::new();
        let texts = ["hi", "hello there", "héllo", "a b c d e f"].map(String::from);
        d.observe_text(&texts, Some(&mut bins));
        assert_eq!(bins, [0, 2, 1, 2], "lengths in characters: 2, 11, 5, 11");
    }
}
