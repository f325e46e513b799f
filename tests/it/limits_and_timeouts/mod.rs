mod deadlines;
mod limits;
