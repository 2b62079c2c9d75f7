//! The HTTP API source. (In progress.)
