mod affinity;
mod routes;
