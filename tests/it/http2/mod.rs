mod downstream;
mod upstream;
