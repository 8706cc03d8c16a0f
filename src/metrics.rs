//! Ranking and regression metrics.
