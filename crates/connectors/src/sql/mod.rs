//! SQL sinks and sources. (In progress.)
