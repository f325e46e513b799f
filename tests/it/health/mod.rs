mod active;
mod resilience;
