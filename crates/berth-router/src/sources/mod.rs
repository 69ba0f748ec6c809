//! Where routes come from: the registry watch, gorouter-style NATS messages, the
//! dyups-style upstreams API and the on-disk cache. Each source owns one slot in the store and replaces it wholesale.

pub mod cache;
pub mod nats;
pub mod registry;
pub mod upstreams;
