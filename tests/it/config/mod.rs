mod parsing;
mod routes;
