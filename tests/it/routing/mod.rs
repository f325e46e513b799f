mod affinity;
mod path_readings;
mod routes;
