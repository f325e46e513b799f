mod deadlines;
mod limits;
mod timeouts;
