mod binary;
mod listener;
mod upstream;
