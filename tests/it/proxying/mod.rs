mod errors;
mod forwarding;
