//! Population files in and out of the mirror: the export format the
//! national database hands over (`format`: CSV and NDJSON, read and
//! validated row by row, written back), the pipeline of `vnid import`
//! (`pipeline`: read, reject or stage, load in one transaction through the
//! mirror's store), and a deterministic synthetic population (`generate`)
//! for the demo and the benchmarks.

pub mod format;
pub mod generate;
pub mod pipeline;

pub use pipeline::{ImportError, ImportObserver, ImportOptions, ImportReport, run};
