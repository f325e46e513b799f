mod docker;
mod kubernetes;
