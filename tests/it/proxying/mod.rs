mod edge_policy;
mod errors;
mod forwarding;
