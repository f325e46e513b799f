mod active;
mod passive;
