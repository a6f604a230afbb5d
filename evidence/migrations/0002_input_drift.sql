-- Input drift: each model version's reference distribution (as its sidecars loaded it) and the
-- count of its predictions in each reference bin of each feature.

-- The reference a version's sidecars sent: `features` is the contract's JSON (the features in the
-- order of every prediction's bins). A different digest replaces it and restarts the bins.
CREATE TABLE model_references (
    namespace TEXT NOT NULL,
    rollout TEXT NOT NULL,
    model TEXT NOT NULL,
    version TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    features TEXT NOT NULL,
    PRIMARY KEY (namespace, rollout, model, version)
);

-- Predictions per feature (its index in the reference) and bin, counted once, with the
-- prediction, in its transaction.
CREATE TABLE feature_bins (
    namespace TEXT NOT NULL,
    rollout TEXT NOT NULL,
    model TEXT NOT NULL,
    version TEXT NOT NULL,
    role TEXT NOT NULL,
    feature BIGINT NOT NULL,
    bin BIGINT NOT NULL,
    n BIGINT NOT NULL,
    PRIMARY KEY (namespace, rollout, model, version, role, feature, bin)
);
