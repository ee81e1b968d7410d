//! Checking and reporting a run from what its clients saw.
//!
//! [`history`] is the record the simulated clients keep; [`checks`] turns it into violations
//! per property; [`report`] writes the JSON report and the text summary.
//!
//! TODO(reports-plots): Markdown summary, plots, sweep merging.

pub mod checks;
pub mod history;
pub mod markdown;
pub mod plots;
pub mod report;
pub mod sweep;
