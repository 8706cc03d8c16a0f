//! Labelled records and datasets.
