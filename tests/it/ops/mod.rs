mod admin;
mod chaos;
mod dashboard;
mod demo;
mod discovery;
mod probes;
mod reload;
mod upgrade;
